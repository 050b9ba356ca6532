// Web Push opt-in: register the service worker at /sw.js, subscribe with the server's
// application server key, and hand the subscription to the server. Every failure (no push
// service, permission refused, VAPID not configured) comes back as a message to show.

import { api } from "./api.js";

const SUBSCRIBE_MS = 15_000;

export function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

/** "unsupported", "on" (this browser is subscribed) or "off". */
export async function pushState() {
  if (!pushSupported()) return "unsupported";
  const registration = await navigator.serviceWorker.getRegistration("/");
  const subscription = await registration?.pushManager.getSubscription();
  return subscription ? "on" : "off";
}

/** Subscribe this browser; resolves to a message saying what happened. */
export async function enablePush() {
  if (!pushSupported()) return { ok: false, message: "This browser has no Web Push." };
  try {
    const registration = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
    await navigator.serviceWorker.ready;
    const { public_key: publicKey } = await api("GET", "/api/push/public-key");
    const permission = await Notification.requestPermission();
    if (permission !== "granted") {
      return { ok: false, message: "Notifications are blocked for this site." };
    }
    const subscription = await within(
      SUBSCRIBE_MS,
      registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: fromBase64Url(publicKey),
      }),
      "the browser's push service did not answer",
    );
    await api("POST", "/api/me/push-subscriptions", subscription.toJSON());
    return { ok: true, message: "Push notifications are on for this browser." };
  } catch (error) {
    return { ok: false, message: `Push notifications are not available: ${error.message}` };
  }
}

/** Unsubscribe this browser, here and on the server. */
export async function disablePush() {
  try {
    const registration = await navigator.serviceWorker.getRegistration("/");
    const subscription = await registration?.pushManager.getSubscription();
    if (subscription) {
      await api("DELETE", "/api/me/push-subscriptions", { endpoint: subscription.endpoint });
      await subscription.unsubscribe();
    }
    return { ok: true, message: "Push notifications are off for this browser." };
  } catch (error) {
    return { ok: false, message: `Could not turn push off: ${error.message}` };
  }
}

/** `promise`, or a rejection saying `what` if it has not settled after `ms`. */
function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(what)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function fromBase64Url(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (char) => char.charCodeAt(0));
}
