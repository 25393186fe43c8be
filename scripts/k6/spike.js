// Spike: a base rate, then ten times that rate within RISE (5 s), held, then back to the base. The panic window
// of the KPA is what should catch it.
//   RATE      base events per second (default 100); the spike is FACTOR x RATE
//   FACTOR    spike multiplier (default 10)
//   BASE      time at the base rate before and after the spike (default 10s)
//   RISE      time to climb to the spike (default 5s)
//   HOLD      time at the spike (default 10s)
//   P99_MS    p99 threshold in ms (default 1000)
import { commonOptions, MAX_VUS, PRE_VUS, sendTransaction, setupRun, summary, thresholds } from './lib/events.js';

const rate = parseInt(__ENV.RATE || '100', 10);
const peak = rate * parseInt(__ENV.FACTOR || '10', 10);
const base = __ENV.BASE || '10s';

export const options = Object.assign({}, commonOptions, {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: rate,
      timeUnit: '1s',
      stages: [
        { target: rate, duration: base },
        { target: peak, duration: __ENV.RISE || '5s' },
        { target: peak, duration: __ENV.HOLD || '10s' },
        { target: rate, duration: '1s' },
        { target: rate, duration: base },
      ],
      preAllocatedVUs: PRE_VUS,
      maxVUs: MAX_VUS,
    },
  },
  thresholds: thresholds('1000'),
});

export const setup = setupRun;
export default sendTransaction;
export const handleSummary = summary('spike');
