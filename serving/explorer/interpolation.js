// Interpolation: two images (shipped test images, or uploads the server decodes and encodes), the codes on
// the linear or spherical path between theirs, decoded as a strip and as an animation.

import { encodeFile } from "./api.js";
import { drawImage, drawTiles, galleryButtons, imageSize } from "./draw.js";
import { labelPath, linearPath, oneHot, sphericalPath } from "./latent.js";
import { Latest, reportDrawn } from "./latest.js";

const FRAME_MS = 120; // animation: one path image per frame
const NAMES = { a: "A", b: "B" };

const $ = (id) => document.getElementById(id);

// testSet: {pixels, n, labels, codes: [{z, y}]} or null. onExplore(code) sends a code to the sliders;
// onEndpoints({a, b}) hears of every change of A or B (the two-dimensional view marks them).
export function setupInterpolation(ctx, testSet, onExplore, onEndpoints) {
  const { model, shape } = ctx;
  const endpoints = { a: null, b: null };
  const strip = $("strip"), animation = $("animation"), play = $("play"), message = $("upload-message");
  const uploadPicker = $("upload-class");
  let frames = null, frame = 0, direction = 1, timer = null;

  if (model.num_classes) {
    $("upload-class-picker").hidden = false;
    for (let k = 0; k < model.num_classes; k++) uploadPicker.append(new Option(`class ${k}`, String(k)));
  }

  let buttons = [];
  if (testSet) {
    $("test-images-note").textContent = `${testSet.n} real test images shipped with the model (the export's ` +
      "check images). Choose two, or upload your own.";
    buttons = galleryButtons($("test-images"), testSet.pixels, shape, testSet.n,
      (i) => `Test image ${i + 1}` + (testSet.labels ? `, class ${testSet.labels[i]}` : ""), chooseTestImage);
  } else {
    $("test-images-note").textContent = "These artifacts ship no test images (exported before kvae wrote " +
      "test_images.png): upload two images, or export the model again.";
  }

  const runner = new Latest(async (_, start) => {
    const { a, b } = endpoints;
    $("endpoints-note").textContent = `A: ${a ? a.what : "not chosen"}. B: ${b ? b.what : "not chosen"}.`;
    onEndpoints(endpoints);
    if (!a || !b) return;
    const steps = Number($("steps").value);
    if (!Number.isInteger(steps) || steps < 2 || steps > 32) {
      throw new Error(`steps must be a whole number from 2 to 32; received "${$("steps").value}".`);
    }
    const spherical = document.querySelector("input[name=path]:checked").value === "spherical";
    const zs = (spherical ? sphericalPath : linearPath)(a.z, b.z, steps);
    const ys = model.num_classes ? labelPath(a.y, b.y, steps) : null;
    frames = await ctx.decode(zs, ys);
    drawTiles(strip, frames, shape, steps);
    frame = 0;
    direction = 1;
    drawImage(animation, frames, shape, 0);
    reportDrawn("interpolation", start, { frames: frames.length / imageSize(shape), path: spherical ? "spherical" : "linear" });
  }, ctx.showError);

  function set(which, code) {
    endpoints[which] = code;
    buttons.forEach((button, i) => {
      const roles = ["a", "b"].filter((k) => endpoints[k] && endpoints[k].testIndex === i).map((k) => NAMES[k]);
      button.querySelector(".badge").textContent = roles.join(" ");
      button.setAttribute("aria-pressed", String(roles.length > 0));
    });
    runner.request();
  }

  function chooseTestImage(i) {
    const radio = document.querySelector("input[name=endpoint]:checked");
    set(radio.value, { ...testSet.codes[i], what: `test image ${i + 1}`, testIndex: i });
    document.querySelector(`input[name=endpoint][value=${radio.value === "a" ? "b" : "a"}]`).checked = true;
  }

  async function upload(which, input) {
    const file = input.files[0];
    if (!file) return;
    const label = model.num_classes ? Number(uploadPicker.value) : null;
    try {
      const answer = await encodeFile(file, label);
      message.textContent = "";
      set(which, { z: answer.z[0], y: label === null ? null : oneHot(label, model.num_classes),
        what: `the upload ${file.name}` });
    } catch (error) {
      // textContent: the file name and the server's message are shown as text, never parsed as HTML.
      message.textContent = `Image ${NAMES[which]} (${file.name}) was not used: ${error.message}`;
    }
  }

  function tick() {
    const count = frames.length / imageSize(shape);
    if (frame + direction < 0 || frame + direction >= count) direction = -direction; // back and forth
    frame += direction;
    drawImage(animation, frames, shape, frame);
  }

  function setPlaying(on) {
    clearInterval(timer);
    timer = on ? setInterval(() => frames && tick(), FRAME_MS) : null;
    play.setAttribute("aria-pressed", String(on));
    play.textContent = on ? "Pause" : "Play";
  }

  $("upload-a").addEventListener("change", (e) => upload("a", e.target));
  $("upload-b").addEventListener("change", (e) => upload("b", e.target));
  for (const input of document.querySelectorAll("input[name=path]")) input.addEventListener("change", () => runner.request());
  $("steps").addEventListener("change", () => runner.request());
  play.addEventListener("click", () => setPlaying(timer === null));
  $("explore-a").addEventListener("click", () => endpoints.a && onExplore(endpoints.a));

  if (testSet && testSet.n >= 2) {
    endpoints.a = { ...testSet.codes[0], what: "test image 1", testIndex: 0 };
    set("b", { ...testSet.codes[1], what: "test image 2", testIndex: 1 });
  } else {
    runner.request();
  }
  // Moving pictures only for those who have not asked their system for less motion.
  setPlaying(!matchMedia("(prefers-reduced-motion: reduce)").matches);
  return { endpoints };
}
