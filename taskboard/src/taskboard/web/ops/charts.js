// Small SVG line charts for the dashboard, drawn with DOM calls (no library, no inline
// style: the page's CSP allows neither). Colours and strokes come from ops.css classes.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 400;
const HEIGHT = 110;
const LEFT = 42;
const BOTTOM = 16;

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

/** A rounded upper bound for the y axis: 1, 2 or 5 times a power of ten. */
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

/**
 * A line chart of `series` ([{name, points: [[unixSeconds, value|null], ...]}]) over
 * [start, end] seconds; `format` writes a y value for the axis. Null values are gaps.
 */
export function lineChart(series, { start, end, format }) {
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v !== null);
  const top = niceMax(Math.max(0, ...values));
  const span = Math.max(1, end - start);
  const x = (t) => LEFT + ((t - start) / span) * (WIDTH - LEFT - 4);
  const y = (v) => HEIGHT - BOTTOM - (v / top) * (HEIGHT - BOTTOM - 6);

  const root = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", role: "img" });
  root.append(svg("line", { class: "axis", x1: LEFT, y1: y(0), x2: WIDTH, y2: y(0) }));
  root.append(svg("line", { class: "axis", x1: LEFT, y1: y(top), x2: WIDTH, y2: y(top) }));
  for (const [value, label] of [[0, format(0)], [top, format(top)]]) {
    const text = svg("text", { class: "tick", x: LEFT - 4, y: y(value) + 3, "text-anchor": "end" });
    text.textContent = label;
    root.append(text);
  }
  for (const [t, label, anchor] of [[start, "−60 min", "start"], [end, "now", "end"]]) {
    const text = svg("text", { class: "tick", x: x(t), y: HEIGHT - 3, "text-anchor": anchor });
    text.textContent = label;
    root.append(text);
  }
  series.forEach((s, index) => {
    let run = [];
    const flush = () => {
      if (run.length === 1) run.unshift([run[0][0] - 4, run[0][1]]); // one point: a short dash
      if (run.length > 1) {
        root.append(svg("polyline", {
          class: `line s${index}`,
          points: run.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" "),
        }));
      }
      run = [];
    };
    for (const [t, v] of s.points) {
      if (v === null) flush();
      else run.push([x(t), y(v)]);
    }
    flush();
  });
  return root;
}
