// The latent-space explorer: reads what the server says of its model (/v1/model), then sets up the views.
// Everything shown comes from this server's own API, run on the same onnxruntime artifacts it serves.

import * as api from "./api.js";
import { setupInterpolation } from "./interpolation.js";
import { oneHot, spread } from "./latent.js";
import { setupManifold } from "./manifold.js";
import { setupSamples } from "./samples.js";
import { setupSliders } from "./sliders.js";

const $ = (id) => document.getElementById(id);

function showError(error) {
  $("message").textContent = error instanceof api.ApiError ? `The server said: ${error.message}` : error.message;
}

function summary(model) {
  const prior = (model.prior === "vamp" ? `a VampPrior (K = ${model.num_components})` : "an N(0, I) prior") +
    (model.levels ? ` over ${model.levels[1].name}` : "");
  const parts = [`${model.latent_dim} latent dimensions`, prior, `${model.likelihood} likelihood`,
    `images ${model.input_shape.join(" × ")}`];
  if (model.levels) parts.push(`two levels (${model.levels.map((l) => `${l.name}: ${l.latent_dim}`).join(", ")})`);
  if (model.num_classes) parts.push(`conditional on ${model.num_classes} classes`);
  return `This model: ${parts.join(", ")}.`;
}

// The shipped test images with their codes: {pixels, n, labels, codes: [{z, y}]}, or null without them.
async function loadTestImages(ctx) {
  if (!ctx.model.test_images) return null;
  const answer = await api.testImages();
  const labels = answer.labels ?? null;
  const codes = [];
  for (let start = 0; start < answer.images.length; start += ctx.model.max_batch_size) {
    const part = answer.images.slice(start, start + ctx.model.max_batch_size);
    const encoded = await api.encodeImages(part, labels && labels.slice(start, start + part.length));
    codes.push(...encoded.z);
  }
  return {
    pixels: Float32Array.from(answer.images.flat(Infinity)),
    n: answer.images.length,
    labels,
    codes: codes.map((z, i) => ({ z, y: labels ? ctx.oneHot(labels[i]) : null })),
  };
}

// Which dimensions get sliders: by the KL the run's evaluation recorded, else by how much the codes of
// real images vary along each (test images, or failing them the samples encoded again).
async function ranking(ctx, testSet, samples) {
  const { model } = ctx;
  if (model.kl_per_dim) {
    return [model.kl_per_dim, "Ranked by each dimension's KL divergence (nats) over the test set, from the " +
      "run's kvae evaluate, recorded in the manifest by kvae export.", "KL"];
  }
  const noKl = "The export recorded no per-dimension KL (run kvae evaluate before kvae export to get it): ";
  if (testSet) {
    return [spread(testSet.codes.map((c) => c.z)), noKl + `ranked by the spread (standard deviation) of the ` +
      `codes of the ${testSet.n} shipped test images.`, "sd"];
  }
  const shown = samples.images();
  const images = [];
  const size = model.input_shape.reduce((a, b) => a * b);
  for (let i = 0; i < shown.n; i++) images.push(nest(shown.pixels.slice(i * size, (i + 1) * size), model.input_shape));
  const encoded = await api.encodeImages(images, model.num_classes ? shown.labels : null);
  return [spread(encoded.z), noKl + `ranked by the spread (standard deviation) of the codes of the ${shown.n} ` +
    "samples, encoded again.", "sd"];
}

// A flat image back to nested rows (h, w, c), as JSON images are sent.
function nest(flat, [h, w, c]) {
  return Array.from({ length: h }, (_, r) => Array.from({ length: w }, (_, k) =>
    Array.from(flat.slice((r * w + k) * c, (r * w + k + 1) * c))));
}

async function main() {
  let model;
  try {
    model = await api.modelFacts();
  } catch (error) {
    $("model-summary").textContent = "The model's description could not be loaded.";
    showError(error);
    return;
  }
  $("model-summary").textContent = summary(model);
  const ctx = {
    model,
    shape: model.input_shape,
    showError,
    clearError: () => ($("message").textContent = ""),
    decode: (zs, ys) => api.decode(zs, ys, model.max_batch_size),
    oneHot: (label) => (model.num_classes ? oneHot(label, model.num_classes) : null),
  };
  try {
    const testSet = await loadTestImages(ctx);
    const sliders = setupSliders(ctx);
    const samples = setupSamples(ctx, (code) => sliders.setCenter(code));
    // The plane of a two-dimensional model is decoded with the class picked for samples (class 0 for "all").
    const picker = $("class");
    const planeLabel = () => (model.num_classes ? ctx.oneHot(Number(picker.value || 0)) : null);
    const manifold = model.latent_dim === 2 ? setupManifold(ctx, testSet, planeLabel) : null;
    if (manifold) picker.addEventListener("change", () => manifold.redraw());
    const explore = (code) => {
      samples.mark(null);
      sliders.setCenter(code);
    };
    setupInterpolation(ctx, testSet, explore, (ends) => manifold && manifold.setMarks(ends));
    await samples.ready;
    sliders.setRanking(...(await ranking(ctx, testSet, samples)));
    sliders.setCenter(samples.code(0));
    samples.mark(0);
  } catch (error) {
    showError(error);
  }
}

main();
