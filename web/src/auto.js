// The "Auto" choice: the Python SDK's LatencyRule (tandem.device.hybrid). Each side's measured
// latency is kept as an exponentially weighted mean; each side is tried once, then the faster one
// runs and the other is probed every 20th call, so a network that got faster is noticed.

export class LatencyRule {
  constructor({ alpha = 0.3, probeEvery = 20, failurePenaltyMs = 10000 } = {}) {
    this.alpha = alpha;
    this.probeEvery = probeEvery;
    this.failurePenaltyMs = failurePenaltyMs;
    this.ewma = {};
    this.calls = 0;
  }

  choose(available) {
    if (available.length === 1) return available[0];
    this.calls += 1;
    const untried = available.find((w) => !(w in this.ewma));
    if (untried) return untried;
    const sorted = [...available].sort((a, b) => this.ewma[a] - this.ewma[b]);
    return this.calls % this.probeEvery === 0 ? sorted[1] : sorted[0];
  }

  observe(where, ms, ok) {
    const x = ok ? ms : this.failurePenaltyMs;
    this.ewma[where] = where in this.ewma ? this.alpha * x + (1 - this.alpha) * this.ewma[where] : x;
  }
}
