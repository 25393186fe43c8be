// Idle then burst: nothing for IDLE (long enough for the service to scale to zero, or 0s when the harness has
// already waited for zero instances), then a burst at RATE. The first requests meet no instance: the activator
// buffers them through the cold start, so the burst's max latency is the client's view of scale-from-zero.
//   IDLE      idle time before the burst (default 0s)
//   RATE      burst events per second (default 200)
//   DURATION  burst length (default 20s)
//   P99_MS    p99 threshold in ms (default 10000: a fresh cold start takes seconds)
import { commonOptions, MAX_VUS, PRE_VUS, sendTransaction, setupRun, summary, thresholds } from './lib/events.js';

export const options = Object.assign({}, commonOptions, {
  scenarios: {
    burst: {
      executor: 'constant-arrival-rate',
      startTime: __ENV.IDLE || '0s',
      rate: parseInt(__ENV.RATE || '200', 10),
      timeUnit: '1s',
      duration: __ENV.DURATION || '20s',
      preAllocatedVUs: PRE_VUS,
      maxVUs: MAX_VUS,
    },
  },
  thresholds: thresholds('10000'),
});

export const setup = setupRun;
export default sendTransaction;
export const handleSummary = summary('idle_burst');
