// Samples: a grid of prior draws (/v1/generate: the artifacts' own prior, learned or N(0, I)) for a seed,
// a temperature and, for conditional models, a class; choosing one hands its code to the sliders.

import { generate } from "./api.js";
import { galleryButtons } from "./draw.js";
import { oneHot } from "./latent.js";
import { Latest, reportDrawn } from "./latest.js";

const COUNT = 16;
const MAX_SEED = 2 ** 31 - 1; // what the page draws; the server takes any seed up to 2**63 - 1

const $ = (id) => document.getElementById(id);

// onChoose(code): code = {z, y (one-hot or null), what}. Returns {ready: the first grid, code(i), images()}.
export function setupSamples(ctx, onChoose) {
  const { model, shape } = ctx;
  const seed = $("seed"), temperature = $("temperature"), shown = $("temperature-value"), picker = $("class");
  const grid = $("samples");
  const n = Math.min(COUNT, model.max_batch_size);
  let last = null; // the grid on show: {z, labels, seed, temperature, pixels}

  if (model.num_classes) {
    $("class-picker").hidden = false;
    picker.append(new Option("every class in turn", ""));
    for (let k = 0; k < model.num_classes; k++) picker.append(new Option(`class ${k}`, String(k)));
  }

  let resolveReady;
  const ready = new Promise((resolve) => (resolveReady = resolve));
  const runner = new Latest(async (_, start) => {
    const value = seed.valueAsNumber;
    if (!Number.isInteger(value) || value < 0 || value > MAX_SEED) {
      throw new Error(`the seed must be a whole number from 0 to ${MAX_SEED}; received "${seed.value}".`);
    }
    const t = Number(temperature.value);
    const label = model.num_classes && picker.value !== "" ? Number(picker.value) : null;
    const answer = await generate(n, value, t, label);
    const labels = Array.isArray(answer.labels) ? answer.labels : answer.z.map(() => answer.labels ?? null);
    const pixels = Float32Array.from(answer.images.flat(Infinity));
    last = { z: answer.z, labels, seed: value, temperature: t, pixels };
    galleryButtons(grid, pixels, shape, n, (i) => `Sample ${i + 1}: explore its code with the sliders`, choose);
    mark(null);
    ctx.clearError();
    reportDrawn("samples", start, { seed: value });
    resolveReady();
  }, ctx.showError);

  function choose(i) {
    onChoose(code(i));
    mark(i);
  }

  // The sample whose code the sliders explore, if one is (null: none).
  function mark(chosen) {
    grid.querySelectorAll("button.tile").forEach((button, i) => button.setAttribute("aria-pressed", String(i === chosen)));
  }

  function code(i) {
    const y = model.num_classes ? oneHot(last.labels[i], model.num_classes) : null;
    const what = `sample ${i + 1} (seed ${last.seed}, temperature ${last.temperature.toFixed(2)}` +
      (y ? `, class ${last.labels[i]})` : ")");
    return { z: last.z[i], y, what };
  }

  seed.addEventListener("change", () => runner.request());
  $("new-seed").addEventListener("click", () => {
    seed.value = String(crypto.getRandomValues(new Uint32Array(1))[0] % (MAX_SEED + 1));
    runner.request();
  });
  temperature.addEventListener("input", () => {
    shown.value = Number(temperature.value).toFixed(2);
    runner.request();
  });
  picker.addEventListener("change", () => runner.request());
  runner.request();
  return { ready, code, mark, images: () => last && { pixels: last.pixels, n, labels: last.labels } };
}
