'use strict';
// Latency histogram in microseconds: 32 logarithmic buckets per power of two (about 2% wide),
// merged and turned into percentiles by the Python side (scripts/_loadstats.py).

const PER_OCTAVE = 32;
const BUCKETS = 40 * PER_OCTAVE;

class Histogram {
  constructor() {
    this.counts = new Float64Array(BUCKETS);
    this.max = 0;
    this.n = 0;
  }

  record(us) {
    const v = us < 1 ? 1 : us;
    const i = Math.min(BUCKETS - 1, Math.floor(Math.log2(v) * PER_OCTAVE));
    this.counts[i]++;
    this.n++;
    if (v > this.max) this.max = v;
  }

  toJSON() {
    const sparse = [];
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i] > 0) sparse.push([i, this.counts[i]]);
    return { perOctave: PER_OCTAVE, buckets: sparse, max: this.max, n: this.n };
  }
}

// CLOCK_MONOTONIC in microseconds: the same clock in every process of the machine.
function nowUs() {
  const t = process.hrtime();
  return t[0] * 1e6 + t[1] / 1e3;
}

module.exports = { Histogram, nowUs };
