// Latent sliders: the most used dimensions of a chosen code, one range input each; every move decodes the
// code they set (the decoder through the Open Inference Protocol) and redraws the image.

import { drawImage } from "./draw.js";
import { dimensionName, ranked } from "./latent.js";
import { Latest, reportDrawn } from "./latest.js";

const COUNT = 8; // sliders shown: the top dimensions of the ranking
const RADIUS = 3; // each slider spans the chosen code's value +- RADIUS (prior standard deviations for N(0, I))
const STEP = 0.1; // one arrow key press

const $ = (id) => document.getElementById(id);

export function setupSliders(ctx) {
  const { model, shape } = ctx;
  const container = $("sliders"), canvas = $("slider-image"), centerNote = $("center-note");
  let order = [], inputs = [], outputs = [], center = null;

  const runner = new Latest(async (_, start) => {
    const z = current();
    const x = await ctx.decode([z], center.y ? [center.y] : null);
    drawImage(canvas, x, shape);
    reportDrawn("slider", start, { z });
  }, ctx.showError);

  // scores: one per dimension (larger: more used); how: the sentence that says where they come from.
  function setRanking(scores, how, unit) {
    order = ranked(scores).slice(0, Math.min(COUNT, model.latent_dim));
    $("ranking-note").textContent = how;
    container.replaceChildren();
    inputs = [];
    outputs = [];
    for (const j of order) {
      const row = document.createElement("div");
      row.className = "slider";
      const label = document.createElement("label");
      label.htmlFor = `dim-${j}`;
      label.textContent = dimensionName(j, model.levels);
      const input = document.createElement("input");
      Object.assign(input, { type: "range", id: `dim-${j}`, step: String(STEP) });
      const output = document.createElement("output");
      output.htmlFor = input.id;
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = `${unit} ${scores[j].toFixed(2)}`;
      input.setAttribute("aria-describedby", `${input.id}-score`);
      score.id = `${input.id}-score`;
      input.addEventListener("input", () => {
        output.value = Number(input.value).toFixed(2);
        runner.request();
      });
      row.append(label, input, output, score);
      container.append(row);
      inputs.push(input);
      outputs.push(output);
    }
  }

  // code = {z, y, what}: the sliders span its values, and its image is drawn.
  function setCenter(code) {
    center = code;
    order.forEach((j, k) => {
      const value = code.z[j];
      Object.assign(inputs[k], { min: (value - RADIUS).toFixed(4), max: (value + RADIUS).toFixed(4) });
      inputs[k].value = String(value);
      outputs[k].value = value.toFixed(2);
    });
    const rest = model.latent_dim - order.length;
    centerNote.textContent = `Around ${code.what}` +
      (rest ? `; its other ${rest} dimension${rest > 1 ? "s" : ""} stay as they are.` : ".");
    runner.request();
  }

  function current() {
    const z = center.z.slice();
    order.forEach((j, k) => (z[j] = Number(inputs[k].value)));
    return z;
  }

  $("reset-sliders").addEventListener("click", () => center && setCenter(center));
  return { setRanking, setCenter };
}
