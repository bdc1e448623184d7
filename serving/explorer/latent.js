// Arithmetic on codes: paths between two codes, and which latent dimensions matter most.

// The codes a + t (b - a) for `steps` values of t from 0 to 1.
export function linearPath(a, b, steps) {
  return ts(steps).map((t) => a.map((v, i) => v + t * (b[i] - v)));
}

// Spherical interpolation (slerp): along the great circle between a and b, their norms blended linearly;
// nearly parallel codes fall back to the straight line.
export function sphericalPath(a, b, steps) {
  const na = norm(a), nb = norm(b);
  if (na === 0 || nb === 0) return linearPath(a, b, steps);
  const cos = Math.min(1, Math.max(-1, a.reduce((s, v, i) => s + v * b[i], 0) / (na * nb)));
  const omega = Math.acos(cos);
  if (Math.sin(omega) < 1e-6) return linearPath(a, b, steps);
  return ts(steps).map((t) => {
    const wa = Math.sin((1 - t) * omega) / Math.sin(omega), wb = Math.sin(t * omega) / Math.sin(omega);
    return a.map((v, i) => wa * v + wb * b[i]);
  });
}

// Labels along a path: the one-hot rows blend linearly, as the runtime's interpolate does.
export const labelPath = (ya, yb, steps) => linearPath(ya, yb, steps);

export function oneHot(label, numClasses) {
  return Array.from({ length: numClasses }, (_, k) => (k === label ? 1 : 0));
}

// Dimension indices, largest score first (ties: the lower index).
export function ranked(scores) {
  return scores.map((s, i) => [s, i]).sort((p, q) => q[0] - p[0] || p[1] - q[1]).map(([, i]) => i);
}

// The standard deviation of each dimension over a set of codes.
export function spread(codes) {
  const n = codes.length, d = codes[0].length;
  return Array.from({ length: d }, (_, j) => {
    const mean = codes.reduce((s, z) => s + z[j], 0) / n;
    return Math.sqrt(codes.reduce((s, z) => s + (z[j] - mean) ** 2, 0) / n);
  });
}

// A dimension's name: z3, or z1[2] / z2[0] in a hierarchical model's flat code [z1 | z2].
export function dimensionName(j, levels) {
  if (!levels) return `z${j}`;
  const d1 = levels[0].latent_dim;
  return j < d1 ? `${levels[0].name}[${j}]` : `${levels[1].name}[${j - d1}]`;
}

const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
const ts = (steps) => Array.from({ length: steps }, (_, k) => (steps === 1 ? 0 : k / (steps - 1)));
