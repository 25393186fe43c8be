// The event stream every load script sends from, and the binary-mode request headers. Imported by lib/events.js
// (the scenario scripts) and by score.js (the scorer benchmark); loading nothing by itself, so each script builds
// exactly one SharedArray, with as many card slices as it has VUs to walk them.
//
// Events come from a JSONL file written by `hiddenstate generate` (one structured CloudEvent per line, per-card
// sequences in time order), given as EVENTS_FILE (best as an absolute path) and cut at MAX_EVENTS transactions
// (default: all). Cards are hashed into one slice per VU and each VU walks only its own slice, so every card's
// events are sent in order by a single VU, one request at a time. Event ids get a run id and a loop counter
// appended, so a repeated run (or a VU wrapping round its slice) sends new events, not redeliveries.
import { SharedArray } from 'k6/data';

export const TRANSACTION_TYPE = 'dev.hiddenstate.transaction';
const EVENTS_FILE = __ENV.EVENTS_FILE;
const MAX_EVENTS = parseInt(__ENV.MAX_EVENTS || '0', 10);

function fnv1a(text) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

// Element 0 is the index ({starts, lengths} per slice); events follow, grouped by slice, in file order within a
// slice. One SharedArray keeps one copy for all VUs and parses only the element a VU touches. Init context only.
export function loadTransactions(slices) {
  if (!EVENTS_FILE) {
    throw new Error('EVENTS_FILE is not set: generate one with `hiddenstate generate --out events.jsonl`');
  }
  return new SharedArray('transactions', function () {
    const bySlice = Array.from({ length: slices }, () => []);
    let kept = 0;
    for (const line of open(EVENTS_FILE).split('\n')) {
      if (!line.trim()) continue;
      const event = JSON.parse(line);
      if (event.type !== TRANSACTION_TYPE) continue; // a stream written with --labels also holds label events
      bySlice[fnv1a(event.data.card_id) % slices].push({
        id: event.id,
        source: event.source,
        time: event.time,
        partitionkey: event.partitionkey || event.data.card_id,
        data: JSON.stringify(event.data),
      });
      kept += 1;
      if (MAX_EVENTS > 0 && kept >= MAX_EVENTS) break;
    }
    const nonEmpty = bySlice.filter((s) => s.length > 0);
    if (nonEmpty.length === 0) throw new Error(`${EVENTS_FILE} holds no ${TRANSACTION_TYPE} events`);
    // With fewer non-empty slices than VUs, some VUs share one and that slice's per-card order is lost.
    const starts = [];
    const lengths = [];
    let next = 1;
    for (const s of nonEmpty) {
      starts.push(next);
      lengths.push(s.length);
      next += s.length;
    }
    return [{ starts, lengths, events: kept }].concat(...nonEmpty);
  });
}

// What setup() hands every VU: the run id that makes event ids unique, and the stream's size.
export function runInfo(stream) {
  const index = stream[0];
  return { runId: __ENV.RUN_ID || String(Date.now()), events: index.events, slices: index.starts.length };
}

// This VU's slice of the stream, decoded once in its init context. A SharedArray decodes an element again on every
// access (the index element too); decoding during the load, and copying each event per request, made k6 spend about
// twice the CPU per request, CPU it takes from the servers it measures on the same cores. The init context of
// setup() and teardown() (__VU 0) sends nothing and gets no slice.
export function vuEvents(stream) {
  if (__VU === 0) return [];
  const index = stream[0];
  const which = (__VU - 1) % index.starts.length;
  const events = new Array(index.lengths[which]);
  for (let i = 0; i < events.length; i++) events[i] = stream[index.starts[which] + i];
  return events;
}

// Per-VU walk position (module state is per VU).
let position = 0;

// The next `count` events of this VU's slice as { event, id }: `id` is run-unique, so a repeated run (or a VU going
// round its slice again) sends new events, not redeliveries.
export function nextEvents(events, count, runId) {
  return nextPositions(events, count, runId).map(({ index, suffix }) => ({
    event: events[index],
    id: events[index].id + suffix,
  }));
}

// The same walk as positions in the slice and the suffix that makes each event's id run-unique, for callers that
// build the request from pre-rendered parts of each event.
export function nextPositions(events, count, runId) {
  const out = new Array(count);
  for (let k = 0; k < count; k++) {
    out[k] = { index: position % events.length, suffix: `-${runId}-${Math.floor(position / events.length)}` };
    position += 1;
  }
  return out;
}

// A binary-mode CloudEvent: attributes in ce-* headers, the transaction (event.data, JSON text) as the body.
export function binaryHeaders(event, id) {
  return {
    'content-type': 'application/json',
    'ce-specversion': '1.0',
    'ce-type': TRANSACTION_TYPE,
    'ce-id': id,
    'ce-source': event.source,
    'ce-time': event.time,
    'ce-partitionkey': event.partitionkey,
  };
}

// One line of the end-of-test text summary.
export function metricLine(data, name) {
  const m = data.metrics[name];
  if (!m) return `${name}: none`;
  const v = m.values;
  if (m.type === 'counter') return `${name}: ${v.count} (${v.rate.toFixed(1)}/s)`;
  if (m.type === 'rate') return `${name}: ${(100 * v.rate).toFixed(2)}% (${v.passes} of ${v.passes + v.fails})`;
  return `${name}: p50 ${v['p(50)'].toFixed(2)} ms, p99 ${v['p(99)'].toFixed(2)} ms, max ${v.max.toFixed(2)} ms`;
}
