// Steady load: a constant arrival rate (open model), so latency is measured at a fixed offered load.
//   RATE      events per second (default 200)
//   DURATION  how long (default 30s)
//   P99_MS    p99 threshold in ms (default 50)
// Plus the common variables of lib/events.js (TARGET_URL, EVENTS_FILE, SUMMARY_FILE, ...).
import { commonOptions, MAX_VUS, PRE_VUS, sendTransaction, setupRun, summary, thresholds } from './lib/events.js';

export const options = Object.assign({}, commonOptions, {
  scenarios: {
    steady: {
      executor: 'constant-arrival-rate',
      rate: parseInt(__ENV.RATE || '200', 10),
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: PRE_VUS,
      maxVUs: MAX_VUS,
    },
  },
  thresholds: thresholds('50'),
});

export const setup = setupRun;
export default sendTransaction;
export const handleSummary = summary('steady');
