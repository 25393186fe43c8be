// Shared by the scenario scripts (steady, ramp, spike, idle_burst, soak): the request, the thresholds and the JSON
// summary, over the event stream of lib/transactions.js (one card slice per VU of the arrival-rate pool).
//
// Common environment (`k6 run -e NAME=value scripts/k6/SCENARIO.js`):
//   TARGET_URL      broker ingress or service URL to POST to (default http://127.0.0.1:8080/)
//   EVENTS_FILE     the JSONL stream, best given as an absolute path (required)
//   MAX_EVENTS      read at most this many transactions from the file (default: all)
//   MAX_VUS         the VU pool of arrival-rate executors, and the number of card slices (default 200)
//   PRE_VUS         VUs allocated before the start (default 20)
//   RUN_ID          suffix that makes event ids unique per run (default: the start time in ms)
//   MAX_ERROR_RATE  threshold on http_req_failed (default 0.01)
//   P99_MS          threshold on the p99 request duration in ms (each script has its own default)
//   SUMMARY_FILE    handleSummary writes the end-of-test summary JSON here
import http from 'k6/http';
import { Counter } from 'k6/metrics';
import { binaryHeaders, loadTransactions, metricLine, nextEvents, runInfo, vuEvents } from './transactions.js';

export const TARGET_URL = __ENV.TARGET_URL || 'http://127.0.0.1:8080/';
export const MAX_VUS = parseInt(__ENV.MAX_VUS || '200', 10);
export const PRE_VUS = Math.min(parseInt(__ENV.PRE_VUS || '20', 10), MAX_VUS);

const stream = loadTransactions(MAX_VUS);
const events = vuEvents(stream);

const eventsAccepted = new Counter('events_accepted');
const eventsFailed = new Counter('events_failed');

export function thresholds(defaultP99Ms) {
  return {
    http_req_failed: [`rate<${__ENV.MAX_ERROR_RATE || '0.01'}`],
    http_req_duration: [`p(99)<${__ENV.P99_MS || defaultP99Ms}`],
  };
}

export const commonOptions = {
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'p(50)', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
};

export function setupRun() {
  return runInfo(stream);
}

// One binary-mode CloudEvent. The scorer answers 200 with the score event; a broker ingress answers 202. Both count
// as accepted.
export function sendTransaction(data) {
  const [{ event, id }] = nextEvents(events, 1, data.runId);
  const response = http.post(TARGET_URL, event.data, { headers: binaryHeaders(event, id) });
  if (response.status === 200 || response.status === 202) {
    eventsAccepted.add(1);
  } else {
    eventsFailed.add(1);
  }
  return response;
}

export function summary(scenario) {
  return function (data) {
    const names = ['events_accepted', 'events_failed', 'http_req_failed', 'http_req_duration'];
    const text = [`${scenario} -> ${TARGET_URL}`].concat(names.map((n) => metricLine(data, n))).join('\n  ') + '\n';
    const out = { stdout: text };
    if (__ENV.SUMMARY_FILE) out[__ENV.SUMMARY_FILE] = JSON.stringify(data, null, 1);
    return out;
  };
}
