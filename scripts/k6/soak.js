// Soak: a moderate constant rate for a long time, to show leaks, AOF growth and latency drift.
//   RATE      events per second (default 300)
//   DURATION  how long (default 30m)
//   P99_MS    p99 threshold in ms (default 100)
import { commonOptions, MAX_VUS, PRE_VUS, sendTransaction, setupRun, summary, thresholds } from './lib/events.js';

export const options = Object.assign({}, commonOptions, {
  scenarios: {
    soak: {
      executor: 'constant-arrival-rate',
      rate: parseInt(__ENV.RATE || '300', 10),
      timeUnit: '1s',
      duration: __ENV.DURATION || '30m',
      preAllocatedVUs: PRE_VUS,
      maxVUs: MAX_VUS,
    },
  },
  thresholds: thresholds('100'),
});

export const setup = setupRun;
export default sendTransaction;
export const handleSummary = summary('soak');
