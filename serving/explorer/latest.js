// Work that must follow a control (a slider, the pointer): one run at a time, and of the requests made
// while one runs only the latest is kept, so that a control moved fast redraws its last position instead
// of working through a queue of stale ones.

export const DRAWN = "explorer:drawn"; // the event each view dispatches on document once its image is drawn

export class Latest {
  // work(args, start) -> Promise; onError(error) shows what went wrong.
  constructor(work, onError) {
    this.work = work;
    this.onError = onError;
    this.pending = null;
    this.running = false;
  }

  request(args) {
    this.pending = { args, start: performance.now() };
    if (!this.running) this.run();
  }

  async run() {
    this.running = true;
    while (this.pending) {
      const { args, start } = this.pending;
      this.pending = null;
      try {
        await this.work(args, start);
      } catch (error) {
        this.onError(error);
      }
    }
    this.running = false;
  }
}

// Tells tests and benchmarks (and anyone listening) that `view` has drawn, `ms` after the request that
// caused it (performance.now(): from the control's event to the pixels on the canvas).
export function reportDrawn(view, start, detail = {}) {
  document.dispatchEvent(new CustomEvent(DRAWN, { detail: { view, ms: performance.now() - start, ...detail } }));
}
