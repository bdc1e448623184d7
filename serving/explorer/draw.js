// Model images (float pixels in [0, 1], row-major (h, w, c), c = 1 or 3) onto canvases, one canvas pixel per
// image pixel; CSS scales the canvases up without smoothing.

// The image starting at pixels[offset] as ImageData (w x h).
export function imageData(pixels, offset, shape) {
  const [h, w, c] = shape;
  const out = new ImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    for (let k = 0; k < 3; k++) {
      const v = pixels[offset + i * c + (c === 1 ? 0 : k)];
      out.data[4 * i + k] = Math.round(Math.min(1, Math.max(0, v)) * 255);
    }
    out.data[4 * i + 3] = 255;
  }
  return out;
}

export const imageSize = (shape) => shape[0] * shape[1] * shape[2];

// Image `index` of a batch onto a canvas of the image's size.
export function drawImage(canvas, pixels, shape, index = 0) {
  const [h, w] = shape;
  if (canvas.width !== w || canvas.height !== h) Object.assign(canvas, { width: w, height: h });
  canvas.getContext("2d").putImageData(imageData(pixels, index * imageSize(shape), shape), 0, 0);
}

// n images of a batch side by side, `gap` dark pixels between them, `columns` per row.
export function drawTiles(canvas, pixels, shape, n, columns = n, gap = 1) {
  const [h, w] = shape;
  const rows = Math.ceil(n / columns);
  Object.assign(canvas, { width: columns * (w + gap) - gap, height: rows * (h + gap) - gap });
  const context = canvas.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < n; i++) {
    const x = (i % columns) * (w + gap), y = Math.floor(i / columns) * (h + gap);
    context.putImageData(imageData(pixels, i * imageSize(shape), shape), x, y);
  }
}

// One small canvas per image inside a button each, for galleries one can tab through.
// Redrawing the same number of images keeps the buttons (and the keyboard focus on one of them).
export function galleryButtons(container, pixels, shape, n, label, onChoose) {
  const existing = [...container.querySelectorAll("button.tile")];
  if (existing.length === n) {
    existing.forEach((button, i) => drawImage(button.querySelector("canvas"), pixels, shape, i));
    return existing;
  }
  container.replaceChildren();
  const buttons = [];
  for (let i = 0; i < n; i++) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "tile";
    button.setAttribute("aria-label", label(i));
    const canvas = document.createElement("canvas");
    drawImage(canvas, pixels, shape, i);
    const badge = document.createElement("span");
    badge.className = "badge";
    button.append(canvas, badge);
    button.addEventListener("click", () => onChoose(i));
    container.append(button);
    buttons.push(button);
  }
  return buttons;
}
