// The server's own API, the only thing the page talks to: /v1 for models facts, samples, test images and
// codes of images; the Open Inference Protocol's decoder infer for every image drawn from a code.

export const ROUTES = {
  model: "/v1/model",
  generate: "/v1/generate",
  encode: "/v1/encode",
  testImages: "/v1/test-images?format=json",
  decoder: "/v2/models/decoder/infer",
};
const JSON_TYPE = "application/json";

// A refused request, with the server's own message ({"error": ...}) when it sent one.
export class ApiError extends Error {}

async function call(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new ApiError(`the server did not answer (${e.message}); is kvae serve still running?`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: reported below with the status
  }
  if (!response.ok) {
    const said = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
    throw new ApiError(said);
  }
  if (body === null) throw new ApiError(`the server answered ${path} with something other than JSON`);
  return body;
}

function postJson(path, value) {
  return call(path, { method: "POST", headers: { "Content-Type": JSON_TYPE }, body: JSON.stringify(value) });
}

export const modelFacts = () => call(ROUTES.model);
export const testImages = () => call(ROUTES.testImages);

// n prior samples: {seed, images (n, h, w, c), z (n, latent_dim), labels (conditional models)}.
export function generate(n, seed, temperature, label) {
  const request = { n, seed, temperature, format: "json" };
  if (label !== null) request.label = label;
  return postJson(ROUTES.generate, request);
}

// Codes of images given as nested arrays (n, h, w, c): {z, z_log_var}.
export function encodeImages(images, labels) {
  return postJson(ROUTES.encode, labels ? { images, labels } : { images });
}

// The code of an image file, decoded and checked by the server: {z, images: the pixels the model read}.
export function encodeFile(file, label) {
  // A file of unknown type goes as octet-stream, so that the server names the problem (415) instead of
  // reading it as JSON.
  const type = file.type && file.type.startsWith("image/") ? file.type : "application/octet-stream";
  const query = label === null ? "" : `?label=${encodeURIComponent(label)}`;
  return call(ROUTES.encode + query, { method: "POST", headers: { "Content-Type": type }, body: file });
}

// Decoded images for codes: zs (n arrays of latent_dim), ys (n one-hot arrays, conditional models only)
// -> Float32Array (n * h * w * c), in requests of at most maxBatch rows.
export async function decode(zs, ys, maxBatch) {
  const parts = [];
  for (let start = 0; start < zs.length; start += maxBatch) {
    const z = zs.slice(start, start + maxBatch);
    const inputs = [tensor("z", z)];
    if (ys) inputs.push(tensor("y", ys.slice(start, start + maxBatch)));
    const answer = await postJson(ROUTES.decoder, { inputs, outputs: [{ name: "x_mean" }] });
    parts.push(answer.outputs[0].data);
  }
  return Float32Array.from(parts.flat());
}

function tensor(name, rows) {
  return { name, shape: [rows.length, rows[0].length], datatype: "FP32", data: rows.flat() };
}
