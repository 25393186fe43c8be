// Ramp: the arrival rate climbs linearly from START_RATE to PEAK_RATE, past saturation, so the knee of the latency
// curve and the autoscaler's response both show.
//   START_RATE  events per second at the start (default 50)
//   PEAK_RATE   events per second at the end (default 3000)
//   DURATION    length of the climb (default 60s)
//   HOLD        how long to stay at the peak afterwards (default 0s)
//   P99_MS      p99 threshold in ms (default 1000: past saturation queues grow by design)
import { commonOptions, MAX_VUS, PRE_VUS, sendTransaction, setupRun, summary, thresholds } from './lib/events.js';

const stages = [{ target: parseInt(__ENV.PEAK_RATE || '3000', 10), duration: __ENV.DURATION || '60s' }];
if (__ENV.HOLD && __ENV.HOLD !== '0s') {
  stages.push({ target: stages[0].target, duration: __ENV.HOLD });
}

export const options = Object.assign({}, commonOptions, {
  scenarios: {
    ramp: {
      executor: 'ramping-arrival-rate',
      startRate: parseInt(__ENV.START_RATE || '50', 10),
      timeUnit: '1s',
      stages,
      preAllocatedVUs: PRE_VUS,
      maxVUs: MAX_VUS,
    },
  },
  thresholds: thresholds('1000'),
});

export const setup = setupRun;
export default sendTransaction;
export const handleSummary = summary('ramp');
