// taskboard's service worker: shows a Web Push message (title, body, url) as a
// notification, and on a click focuses a tab of this site on that url or opens one.
// It caches nothing: the page always comes from the server.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function readPayload(data) {
  if (!data) return {};
  try {
    const parsed = data.json();
    return parsed && typeof parsed === "object" ? parsed : {};
  } catch {
    return { body: data.text() };
  }
}

/** Only a url of this site is opened: a push message cannot send the user elsewhere. */
function sameOriginUrl(url) {
  try {
    const resolved = new URL(typeof url === "string" ? url : "/", self.location.origin);
    return resolved.origin === self.location.origin ? resolved.href : self.location.origin + "/";
  } catch {
    return self.location.origin + "/";
  }
}

self.addEventListener("push", (event) => {
  const payload = readPayload(event.data);
  const title = typeof payload.title === "string" && payload.title ? payload.title : "taskboard";
  const options = {
    body: typeof payload.body === "string" ? payload.body : "",
    data: { url: sameOriginUrl(payload.url) },
  };
  if (payload.notification_id) options.tag = String(payload.notification_id);
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = sameOriginUrl(event.notification.data?.url);
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const exact = windows.find((client) => client.url === url);
      if (exact) return exact.focus();
      const ours = windows.find((client) => new URL(client.url).origin === self.location.origin);
      if (ours && "navigate" in ours) {
        try {
          const navigated = await ours.navigate(url);
          return (navigated ?? ours).focus();
        } catch {
          // an uncontrolled tab cannot be navigated from here: open a new one instead
        }
      }
      return self.clients.openWindow(url);
    })(),
  );
});
