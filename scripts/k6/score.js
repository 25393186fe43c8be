// Load the scorer with transaction CloudEvents in binary mode (or CloudEvents batches), from a generated stream
// (lib/transactions.js: per-card slices, one per VU, so every card's events go in order; run-unique event ids).
//
// Environment (`k6 run -e NAME=value scripts/k6/score.js`):
//   TARGET_URL    scorer URL to POST to (default http://127.0.0.1:8080/)
//   EVENTS_FILE   the JSONL stream, best given as an absolute path (required)
//   MAX_EVENTS    read at most this many transactions from the file (default: all)
//   SCENARIO      closed: constant-vus (VUS, DURATION); open: constant-arrival-rate (RATE, DURATION)
//   VUS           closed model: virtual users (default 32)
//   RATE          open model: requests per second (default 500); PRE_VUS / MAX_VUS size the VU pool (20 / 200)
//   DURATION      how long to run (default 10s)
//   BATCH         0 or 1: one binary-mode event per request; N > 1: application/cloudevents-batch+json arrays of N
//   RUN_ID        suffix that makes event ids unique per run (default: the start time in ms)
//   MAX_ERROR_RATE  threshold on http_req_failed (default 0.01)
//   P99_MS        threshold on the p99 request duration in ms (default 5, the goal at 1000 events/s)
//   SUMMARY_FILE  handleSummary writes the end-of-test summary JSON here
import http from 'k6/http';
import { Counter } from 'k6/metrics';
import {
  TRANSACTION_TYPE, binaryHeaders, loadTransactions, metricLine, nextEvents, nextPositions, runInfo, vuEvents,
} from './lib/transactions.js';

const TARGET_URL = __ENV.TARGET_URL || 'http://127.0.0.1:8080/';
const SCENARIO = __ENV.SCENARIO || 'closed';
const VUS = parseInt(__ENV.VUS || '32', 10);
const RATE = parseInt(__ENV.RATE || '500', 10);
const PRE_VUS = parseInt(__ENV.PRE_VUS || '20', 10);
const MAX_VUS = parseInt(__ENV.MAX_VUS || '200', 10);
const DURATION = __ENV.DURATION || '10s';
const BATCH = parseInt(__ENV.BATCH || '0', 10);

if (SCENARIO !== 'closed' && SCENARIO !== 'open') {
  throw new Error(`SCENARIO must be closed or open, got ${SCENARIO}`);
}

// Every VU id the scenario can use gets its own slice of cards.
const stream = loadTransactions(SCENARIO === 'open' ? MAX_VUS : VUS);
const events = vuEvents(stream);

const eventsScored = new Counter('events_scored');
const eventsFailed = new Counter('events_failed');

const scenario =
  SCENARIO === 'open'
    ? {
        executor: 'constant-arrival-rate',
        rate: RATE,
        timeUnit: '1s',
        duration: DURATION,
        preAllocatedVUs: Math.min(PRE_VUS, MAX_VUS),
        maxVUs: MAX_VUS,
      }
    : { executor: 'constant-vus', vus: VUS, duration: DURATION };

export const options = {
  scenarios: { score: scenario },
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'p(50)', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
  thresholds: {
    http_req_failed: [`rate<${__ENV.MAX_ERROR_RATE || '0.01'}`],
    http_req_duration: [`p(99)<${__ENV.P99_MS || '5'}`],
  },
};

export function setup() {
  return runInfo(stream);
}

function binaryRequest({ event, id }) {
  return http.post(TARGET_URL, event.data, { headers: binaryHeaders(event, id) });
}

// Batch mode: each event's structured JSON, split around the end of its id, built once per VU. Only the id's
// run-unique suffix (digits and dashes, nothing to escape) is spliced in per request: building every event's JSON
// per request cost k6 about as much CPU per event as Valkey's reads and writes, on the cores the servers share.
const structuredParts = BATCH > 1 ? events.map(structuredAroundId) : [];

function structuredAroundId(event) {
  const head = `{"specversion":"1.0","type":"${TRANSACTION_TYPE}","id":${JSON.stringify(event.id).slice(0, -1)}`;
  // `data` is already JSON text: splice it in rather than parse and re-serialise it.
  const tail =
    `","source":${JSON.stringify(event.source)},"time":"${event.time}","datacontenttype":"application/json",` +
    `"partitionkey":${JSON.stringify(event.partitionkey)},"data":${event.data}}`;
  return [head, tail];
}

function batchRequest(count, runId) {
  const positions = nextPositions(events, count, runId);
  const parts = new Array(count);
  for (let k = 0; k < count; k++) {
    const [head, tail] = structuredParts[positions[k].index];
    parts[k] = head + positions[k].suffix + tail;
  }
  return http.post(TARGET_URL, `[${parts.join(',')}]`, {
    headers: { 'content-type': 'application/cloudevents-batch+json' },
  });
}

export default function (data) {
  const count = BATCH > 1 ? BATCH : 1;
  const response = count > 1 ? batchRequest(count, data.runId) : binaryRequest(nextEvents(events, 1, data.runId)[0]);
  if (response.status === 200) {
    eventsScored.add(count);
  } else {
    eventsFailed.add(count);
  }
}

export function handleSummary(data) {
  const text =
    [`score.js ${SCENARIO} BATCH=${BATCH || 1} -> ${TARGET_URL}`]
      .concat(['events_scored', 'events_failed', 'http_req_failed', 'http_req_duration'].map((n) => metricLine(data, n)))
      .join('\n  ') + '\n';
  const out = { stdout: text };
  if (__ENV.SUMMARY_FILE) out[__ENV.SUMMARY_FILE] = JSON.stringify(data, null, 1);
  return out;
}
