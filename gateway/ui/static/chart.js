// Charts drawn as SVG with DOM calls: a line chart and a bar chart over
// time. Colours and strokes come from style.css (classes s0..s5), never
// from inline styles, which the page's Content-Security-Policy forbids.

const NS = 'http://www.w3.org/2000/svg';
const W = 640, H = 220, PAD = { l: 48, r: 12, t: 12, b: 28 };

function el(name, attrs = {}, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

// niceMax rounds a maximum up to 1, 2, 4, 6 or 8 times a power of ten.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 6, 8, 10]) if (v <= m * p) return m * p; // quarters read well
  return 10 * p;
}

function fmt(v) {
  if (v === 0) return '0';
  if (Math.abs(v) >= 1000) return (v / 1000).toFixed(v % 1000 ? 1 : 0) + 'k';
  if (Math.abs(v) >= 10) return v.toFixed(0);
  if (Math.abs(v) >= 1) return v.toFixed(1).replace(/\.0$/, '');
  if (Math.abs(v) >= 0.01) return v.toPrecision(2).replace(/0+$/, '');
  return v.toExponential(1).replace('.0e', 'e'); // costs per hour are tiny
}

// frame draws the axes, grid and x labels, and returns the SVG and the
// scales. xs are the x values (times in ms), ymax the top of the y axis.
function frame(container, { title, xs, ymax, xfmt }) {
  container.replaceChildren();
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart-svg', preserveAspectRatio: 'xMidYMid meet' }, container);
  el('title', {}, svg).textContent = title;
  const x0 = xs[0] ?? 0, x1 = xs[xs.length - 1] ?? 1;
  const sx = (x) => PAD.l + (x1 === x0 ? 0 : (x - x0) / (x1 - x0)) * (W - PAD.l - PAD.r);
  const sy = (y) => H - PAD.b - (y / ymax) * (H - PAD.t - PAD.b);
  const grid = el('g', { class: 'grid' }, svg);
  for (let i = 0; i <= 4; i++) {
    const y = ymax * i / 4;
    el('line', { x1: PAD.l, x2: W - PAD.r, y1: sy(y), y2: sy(y) }, grid);
    const t = el('text', { x: PAD.l - 6, y: sy(y) + 4, 'text-anchor': 'end' }, grid);
    t.textContent = fmt(y);
  }
  const ticks = Math.min(6, xs.length);
  for (let i = 0; i < ticks; i++) {
    const x = xs[Math.round(i * (xs.length - 1) / Math.max(ticks - 1, 1))];
    // The first and last labels align inward, so neither is cut off.
    const anchor = ticks > 1 && i === 0 ? 'start' : ticks > 1 && i === ticks - 1 ? 'end' : 'middle';
    const t = el('text', { x: sx(x), y: H - 8, 'text-anchor': anchor }, grid);
    t.textContent = xfmt(x);
  }
  return { svg, sx, sy };
}

// lineChart draws series [{name, points: [[x, y], ...]}] sharing their x
// values. Each point is a circle with a <title>, for hover and for
// screen readers; the legend names the series.
export function lineChart(container, { title, series, xfmt, yfmt = fmt }) {
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const ymax = niceMax(Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1]))));
  const { svg, sx, sy } = frame(container, { title, xs, ymax, xfmt });
  let n = 0;
  series.forEach((s, i) => {
    const g = el('g', { class: `series s${i % 6}`, 'data-series': s.name }, svg);
    if (s.points.length > 1) {
      el('polyline', { points: s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ') }, g);
    }
    for (const [x, y] of s.points) {
      if (y === 0 && s.points.length > 20) continue; // keep busy charts light
      const c = el('circle', { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 2.5 }, g);
      el('title', {}, c).textContent = `${s.name} ${xfmt(x)}: ${yfmt(y)}`;
      n++;
    }
  });
  svg.setAttribute('data-points', String(n));
  legend(container, series.map((s) => s.name));
  summary(svg, title, series, yfmt);
}

// barChart draws one series of [x, y] as bars.
export function barChart(container, { title, name, points, xfmt, yfmt = fmt }) {
  const xs = points.map((p) => p[0]);
  const ymax = niceMax(Math.max(0, ...points.map((p) => p[1])));
  const { svg, sx, sy } = frame(container, { title, xs, ymax, xfmt });
  const step = xs.length > 1 ? (sx(xs[xs.length - 1]) - sx(xs[0])) / (xs.length - 1) : 10;
  const g = el('g', { class: 'series bars s0', 'data-series': name }, svg);
  let n = 0;
  for (const [x, y] of points) {
    if (y <= 0) continue;
    const r = el('rect', { x: (sx(x) - step * 0.4).toFixed(1), width: Math.max(step * 0.8, 1).toFixed(1), y: sy(y).toFixed(1), height: (sy(0) - sy(y)).toFixed(1) }, g);
    el('title', {}, r).textContent = `${name} ${xfmt(x)}: ${yfmt(y)}`;
    n++;
  }
  svg.setAttribute('data-points', String(n));
  summary(svg, title, [{ name, points }], yfmt);
}

function legend(container, names) {
  if (names.length < 2 && !names[0]) return;
  const ul = document.createElement('ul');
  ul.className = 'legend';
  names.forEach((name, i) => {
    const li = document.createElement('li');
    li.className = `s${i % 6}`;
    li.textContent = name;
    ul.appendChild(li);
  });
  container.appendChild(ul);
}

// summary gives the chart a text alternative: per series its total and
// peak, which is what a glance at the chart tells.
function summary(svg, title, series, yfmt) {
  const parts = series.map((s) => {
    const ys = s.points.map((p) => p[1]);
    const peak = ys.length ? Math.max(...ys) : 0;
    return `${s.name}: peak ${yfmt(peak)}`;
  });
  svg.setAttribute('aria-label', `${title}. ${parts.join('; ') || 'no data'}`);
}
