// Load the scorer with transaction CloudEvents in binary mode (or CloudEvents batches), from a generated stream.
//
// Events come from a JSONL file written by `hiddenstate generate` (one structured CloudEvent per line, per-card
// sequences in time order). Cards are hashed into one slice per VU and each VU walks only its own slice, so every
// card's events are sent in order by a single VU, one request at a time. Event ids get a run id and a loop
// counter appended, so a repeated run (or a VU wrapping round its slice) sends new events, not redeliveries.
//
// Environment (`k6 run -e NAME=value scripts/k6/score.js`):
//   TARGET_URL    scorer URL to POST to (default http://127.0.0.1:8080/)
//   EVENTS_FILE   the JSONL stream; a relative path is resolved from this script's folder (required)
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
import { SharedArray } from 'k6/data';
import { Counter } from 'k6/metrics';

const TARGET_URL = __ENV.TARGET_URL || 'http://127.0.0.1:8080/';
const EVENTS_FILE = __ENV.EVENTS_FILE;
const MAX_EVENTS = parseInt(__ENV.MAX_EVENTS || '0', 10);
const SCENARIO = __ENV.SCENARIO || 'closed';
const VUS = parseInt(__ENV.VUS || '32', 10);
const RATE = parseInt(__ENV.RATE || '500', 10);
const PRE_VUS = parseInt(__ENV.PRE_VUS || '20', 10);
const MAX_VUS = parseInt(__ENV.MAX_VUS || '200', 10);
const DURATION = __ENV.DURATION || '10s';
const BATCH = parseInt(__ENV.BATCH || '0', 10);
const TRANSACTION_TYPE = 'dev.hiddenstate.transaction';

if (!EVENTS_FILE) {
  throw new Error('EVENTS_FILE is not set: generate one with `hiddenstate generate --out events.jsonl`');
}
if (SCENARIO !== 'closed' && SCENARIO !== 'open') {
  throw new Error(`SCENARIO must be closed or open, got ${SCENARIO}`);
}

// Every VU id the scenario can use gets its own slice of cards.
const SLICES = SCENARIO === 'open' ? MAX_VUS : VUS;

function fnv1a(text) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

// Element 0 is the index ({starts, lengths} per VU); events follow, grouped by slice, in file order within a
// slice. One SharedArray keeps one copy for all VUs and parses only the element a VU touches.
const stream = new SharedArray('score-events', function () {
  const bySlice = Array.from({ length: SLICES }, () => []);
  let kept = 0;
  for (const line of open(EVENTS_FILE).split('\n')) {
    if (!line.trim()) continue;
    const event = JSON.parse(line);
    if (event.type !== TRANSACTION_TYPE) continue; // a stream written with --labels also holds label events
    bySlice[fnv1a(event.data.card_id) % SLICES].push({
      id: event.id,
      source: event.source,
      time: event.time,
      partitionkey: event.partitionkey || event.data.card_id,
      data: JSON.stringify(event.data),
    });
    kept += 1;
    if (MAX_EVENTS > 0 && kept >= MAX_EVENTS) break;
  }
  const slices = bySlice.filter((s) => s.length > 0);
  if (slices.length === 0) throw new Error(`${EVENTS_FILE} holds no ${TRANSACTION_TYPE} events`);
  // With fewer non-empty slices than VUs, some VUs share one and that slice's per-card order is lost.
  const starts = [];
  const lengths = [];
  let next = 1;
  for (const s of slices) {
    starts.push(next);
    lengths.push(s.length);
    next += s.length;
  }
  return [{ starts, lengths, events: kept }].concat(...slices);
});
const index = stream[0];

const eventsSent = new Counter('events_sent');
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
  return { runId: __ENV.RUN_ID || String(Date.now()), events: index.events, slices: index.starts.length };
}

// Per-VU walk position (module state is per VU).
let position = 0;

function nextEvents(count, runId) {
  const slice = (__VU - 1) % index.starts.length;
  const start = index.starts[slice];
  const length = index.lengths[slice];
  const out = [];
  for (let k = 0; k < count; k++) {
    const e = stream[start + (position % length)];
    out.push(Object.assign({}, e, { id: `${e.id}-${runId}-${Math.floor(position / length)}` }));
    position += 1;
  }
  return out;
}

function binaryRequest(e) {
  return http.post(TARGET_URL, e.data, {
    headers: {
      'content-type': 'application/json',
      'ce-specversion': '1.0',
      'ce-type': TRANSACTION_TYPE,
      'ce-id': e.id,
      'ce-source': e.source,
      'ce-time': e.time,
      'ce-partitionkey': e.partitionkey,
    },
    tags: { mode: 'binary' },
  });
}

function structured(e) {
  // `data` is already JSON text: splice it in rather than parse and re-serialise it on every request.
  return (
    `{"specversion":"1.0","type":"${TRANSACTION_TYPE}","id":${JSON.stringify(e.id)},` +
    `"source":${JSON.stringify(e.source)},"time":"${e.time}","datacontenttype":"application/json",` +
    `"partitionkey":${JSON.stringify(e.partitionkey)},"data":${e.data}}`
  );
}

function batchRequest(events) {
  return http.post(TARGET_URL, `[${events.map(structured).join(',')}]`, {
    headers: { 'content-type': 'application/cloudevents-batch+json' },
    tags: { mode: 'batch' },
  });
}

export default function (data) {
  const count = BATCH > 1 ? BATCH : 1;
  const events = nextEvents(count, data.runId);
  const response = count > 1 ? batchRequest(events) : binaryRequest(events[0]);
  eventsSent.add(count);
  if (response.status === 200) {
    eventsScored.add(count);
  } else {
    eventsFailed.add(count);
  }
}

function metricLine(data, name) {
  const m = data.metrics[name];
  if (!m) return `${name}: none`;
  const v = m.values;
  if (m.type === 'counter') return `${name}: ${v.count} (${v.rate.toFixed(1)}/s)`;
  if (m.type === 'rate') return `${name}: ${(100 * v.rate).toFixed(2)}% (${v.passes} of ${v.passes + v.fails})`;
  return `${name}: p50 ${v['p(50)'].toFixed(2)} ms, p99 ${v['p(99)'].toFixed(2)} ms, max ${v.max.toFixed(2)} ms`;
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
