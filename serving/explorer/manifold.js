// Two-dimensional latents: the plane as a grid of decoded tiles, the code under the pointer (or under a
// cursor the arrow keys move) decoded live beside it, and A, B and the test images marked where they encode.

import { drawImage, drawTiles } from "./draw.js";
import { Latest, reportDrawn } from "./latest.js";

const TILES = 15; // per side
const RADIUS = 3; // the plane spans [-RADIUS, RADIUS] in both coordinates, or more to show every mark
const KEY_STEP = 0.25; // one arrow key press, in latent units
const MARK_COLOURS = { a: "#ff5a36", b: "#2fb3ff" };

const $ = (id) => document.getElementById(id);

// labelCode() -> the one-hot label the plane is decoded with (conditional models), else null.
export function setupManifold(ctx, testSet, labelCode) {
  const { shape } = ctx;
  const canvas = $("manifold"), live = $("manifold-live"), position = $("manifold-position");
  $("manifold-section").hidden = false;
  const testCodes = testSet ? testSet.codes : [];
  let radius = fit(testCodes), plane = null, pointer = [0, 0], marks = { a: null, b: null };

  const grid = new Latest(async (_, start) => {
    const codes = [], y = labelCode();
    for (let row = 0; row < TILES; row++) {
      for (let column = 0; column < TILES; column++) codes.push([centre(column), -centre(row)]);
    }
    const x = await ctx.decode(codes, y ? codes.map(() => y) : null);
    drawTiles(canvas, x, shape, codes.length, TILES, 0);
    plane = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    overlay();
    reportDrawn("manifold", start);
  }, ctx.showError);

  const under = new Latest(async (z, start) => {
    const y = labelCode();
    drawImage(live, await ctx.decode([z], y ? [y] : null), shape);
    position.textContent = `z = (${z[0].toFixed(2)}, ${z[1].toFixed(2)})`;
    reportDrawn("pointer", start);
  }, ctx.showError);

  const centre = (k) => -radius + ((k + 0.5) * 2 * radius) / TILES; // tile k's coordinate
  const toCanvas = (z) => [((z[0] + radius) / (2 * radius)) * canvas.width, ((radius - z[1]) / (2 * radius)) * canvas.height];

  function overlay() {
    if (!plane) return;
    const context = canvas.getContext("2d");
    context.putImageData(plane, 0, 0);
    for (const code of testCodes) dot(context, toCanvas(code.z), 2, "#ffd84d");
    for (const which of ["a", "b"]) {
      if (!marks[which]) continue;
      const [x, y] = toCanvas(marks[which].z);
      dot(context, [x, y], 6, MARK_COLOURS[which]);
      context.fillStyle = "#fff";
      context.font = "bold 12px sans-serif";
      context.fillText(which.toUpperCase(), x + 8, y - 8);
    }
    const [px, py] = toCanvas(pointer);
    context.strokeStyle = "#fff";
    context.strokeRect(px - 5, py - 5, 10, 10);
  }

  function movePointer(z) {
    pointer = z.map((v) => Math.max(-radius, Math.min(radius, v)));
    overlay();
    under.request(pointer);
  }

  canvas.addEventListener("pointermove", (e) => {
    const box = canvas.getBoundingClientRect();
    const u = (e.clientX - box.left) / box.width, v = (e.clientY - box.top) / box.height;
    movePointer([-radius + u * 2 * radius, radius - v * 2 * radius]);
  });
  canvas.addEventListener("keydown", (e) => {
    const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
    if (!(e.key in moves)) return;
    e.preventDefault();
    movePointer([pointer[0] + KEY_STEP * moves[e.key][0], pointer[1] + KEY_STEP * moves[e.key][1]]);
  });

  // A and B moved (the interpolation's endpoints): mark them, widening the plane if one falls outside it.
  function setMarks(endpoints) {
    marks = { ...endpoints };
    const wanted = fit([...testCodes, ...Object.values(marks).filter(Boolean)]);
    if (wanted !== radius) {
      radius = wanted;
      grid.request();
    } else {
      overlay();
    }
  }

  grid.request();
  movePointer([0, 0]);
  return { setMarks, redraw: () => grid.request() };
}

// RADIUS, or the half unit past the furthest coordinate of the codes (with a 10% margin) if that is more.
function fit(codes) {
  const furthest = Math.max(0, ...codes.flatMap((code) => code.z.map(Math.abs)));
  return furthest * 1.1 > RADIUS ? Math.ceil(furthest * 1.1 * 2) / 2 : RADIUS;
}

function dot(context, [x, y], r, colour) {
  context.beginPath();
  context.arc(x, y, r, 0, 2 * Math.PI);
  context.fillStyle = colour;
  context.fill();
  context.strokeStyle = "#000";
  context.stroke();
}
