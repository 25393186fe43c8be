// Shared by the scenario scripts (steady, ramp, spike, idle_burst, soak): the event stream, the request, the
// thresholds and the JSON summary. score.js (the scorer benchmark's script) works the same way; see it for the
// reasoning behind the per-VU card slices.
//
// Events come from a JSONL file written by `hiddenstate generate` (one structured CloudEvent per line, per-card
// sequences in time order). Cards are hashed into one slice per VU and each VU walks only its own slice, so every
// card's events are sent in order, one at a time. Event ids get a run id and a loop counter appended, so a repeated
// run (or a VU wrapping round its slice) sends new events, not redeliveries.
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
import { SharedArray } from 'k6/data';
import { Counter } from 'k6/metrics';

export const TRANSACTION_TYPE = 'dev.hiddenstate.transaction';
export const TARGET_URL = __ENV.TARGET_URL || 'http://127.0.0.1:8080/';
export const MAX_VUS = parseInt(__ENV.MAX_VUS || '200', 10);
export const PRE_VUS = Math.min(parseInt(__ENV.PRE_VUS || '20', 10), MAX_VUS);
const EVENTS_FILE = __ENV.EVENTS_FILE;
const MAX_EVENTS = parseInt(__ENV.MAX_EVENTS || '0', 10);

if (!EVENTS_FILE) {
  throw new Error('EVENTS_FILE is not set: generate one with `hiddenstate generate --out events.jsonl`');
}

function fnv1a(text) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

// Element 0 is the index ({starts, lengths} per slice); events follow, grouped by slice, in file order within a
// slice. One SharedArray keeps one copy for all VUs and parses only the element a VU touches.
const stream = new SharedArray('transactions', function () {
  const bySlice = Array.from({ length: MAX_VUS }, () => []);
  let kept = 0;
  for (const line of open(EVENTS_FILE).split('\n')) {
    if (!line.trim()) continue;
    const event = JSON.parse(line);
    if (event.type !== TRANSACTION_TYPE) continue; // a stream written with --labels also holds label events
    bySlice[fnv1a(event.data.card_id) % MAX_VUS].push({
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
  return { runId: __ENV.RUN_ID || String(Date.now()), events: index.events, slices: index.starts.length };
}

// Per-VU walk position (module state is per VU).
let position = 0;

function nextEvent(runId) {
  const slice = (__VU - 1) % index.starts.length;
  const length = index.lengths[slice];
  const e = stream[index.starts[slice] + (position % length)];
  const id = `${e.id}-${runId}-${Math.floor(position / length)}`;
  position += 1;
  return Object.assign({}, e, { id });
}

// One binary-mode CloudEvent: attributes in ce-* headers, the transaction as the JSON body. The scorer answers 200
// with the score event; a broker ingress answers 202. Both count as accepted.
export function sendTransaction(data) {
  const e = nextEvent(data.runId);
  const response = http.post(TARGET_URL, e.data, {
    headers: {
      'content-type': 'application/json',
      'ce-specversion': '1.0',
      'ce-type': TRANSACTION_TYPE,
      'ce-id': e.id,
      'ce-source': e.source,
      'ce-time': e.time,
      'ce-partitionkey': e.partitionkey,
    },
  });
  eventsSent.add(1);
  if (response.status === 200 || response.status === 202) {
    eventsAccepted.add(1);
  } else {
    eventsFailed.add(1);
  }
  return response;
}

function metricLine(data, name) {
  const m = data.metrics[name];
  if (!m) return `${name}: none`;
  const v = m.values;
  if (m.type === 'counter') return `${name}: ${v.count} (${v.rate.toFixed(1)}/s)`;
  if (m.type === 'rate') return `${name}: ${(100 * v.rate).toFixed(2)}% (${v.passes} of ${v.passes + v.fails})`;
  return `${name}: p50 ${v['p(50)'].toFixed(2)} ms, p99 ${v['p(99)'].toFixed(2)} ms, max ${v.max.toFixed(2)} ms`;
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
