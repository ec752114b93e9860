// A frame counter: frames over the last second, and the mean time each took.
const WINDOW_MS = 1000;

export class FpsMeter {
  constructor(now = () => performance.now()) {
    this.now = now;
    this.frames = []; // [end time, ms it took]
    this.started = null;
  }

  /** One frame done at now(), which took ``ms``. */
  tick(ms) {
    const t = this.now();
    if (this.started === null) this.started = t - ms;
    this.frames.push([t, ms]);
    this._trim(t);
  }

  _trim(t) {
    while (this.frames.length && this.frames[0][0] <= t - WINDOW_MS) this.frames.shift();
  }

  /**
   * {fps, frame_ms, frames}: frames in the last second (over the time since the first frame while
   * there has been less than a second), the mean ms of those frames. fps 0 when none.
   */
  read() {
    const t = this.now();
    this._trim(t);
    const n = this.frames.length;
    if (!n) return { fps: 0, frame_ms: null, frames: 0 };
    const span = Math.min(WINDOW_MS, t - this.started);
    return { fps: span > 0 ? (1000 * n) / span : 0, frame_ms: this.frames.reduce((s, [, ms]) => s + ms, 0) / n, frames: n };
  }

  reset() {
    this.frames = [];
    this.started = null;
  }
}
