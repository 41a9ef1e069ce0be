// The band talking to itself: the leader's cues (shown large on every
// device, kept in the state until cleared), members' short messages (events
// only), each member's connection quality, and announcements for screen readers.
import { Clock } from './clock.js';
import { Conn, rawSend } from './conn.js';
import { S, nameOf } from './state.js';
import { $, el } from './util.js';

export const MAX_TEXT_BYTES = 120;
const REPORT_EVERY_MS = 5000;
const MESSAGES_SHOWN = 5;
const messages = []; // [{from, text, at}] newest last

/** Bytes of UTF-8, the unit the server counts cues and messages in. */
export const utf8Bytes = (s) => new TextEncoder().encode(s).length;

/** Says `text` to screen readers (the live region is visually hidden). */
export function announce(text) {
  const box = $('#announce');
  box.textContent = '';
  // A fresh text node in a later task is announced even when the words repeat.
  setTimeout(() => (box.textContent = text), 30);
}

export function renderCue(st) {
  const box = $('#cue');
  const cue = st && st.cue && st.cue.text ? st.cue : null;
  box.hidden = !cue;
  if (!cue) {
    box.dataset.text = '';
    return;
  }
  if (box.dataset.text !== cue.text) {
    box.dataset.text = cue.text;
    $('#cue-text').textContent = cue.text;
    $('#cue-by').textContent = `cue from ${nameOf(cue.by)}`;
    box.classList.remove('pop');
    void box.offsetWidth; // restart the animation
    box.classList.add('pop');
  }
}

export function heardMessage(c) {
  messages.push({ from: c.from, text: c.text });
  if (messages.length > MESSAGES_SHOWN) messages.shift();
  const ul = $('#messages');
  ul.textContent = '';
  for (const m of messages) {
    const li = el('li', m.from === S.me ? 'message mine' : 'message');
    li.append(el('b', 'from', nameOf(m.from)), el('span', 'text', m.text));
    ul.append(li);
  }
  $('#messages-empty').hidden = true;
}

/** "42 ms · ±1.2 ms" with a grade for the dot: what a band needs to see who struggles. */
export function quality(m) {
  if (m.rtt_ms == null && m.clock_error_ms == null) return null;
  const parts = [];
  if (m.rtt_ms != null) parts.push(`${Math.round(m.rtt_ms)} ms`);
  if (m.clock_error_ms != null) parts.push(`\u00b1${m.clock_error_ms < 10 ? m.clock_error_ms.toFixed(1) : Math.round(m.clock_error_ms)} ms`);
  const worst = Math.max(m.rtt_ms ?? 0, 4 * (m.clock_error_ms ?? 0));
  return { text: parts.join(' \u00b7 '), grade: worst < 150 ? 'good' : worst < 400 ? 'fair' : 'poor' };
}

/** Sends this device's round trip and clock error every 5 s while connected and welcomed. */
export function startReports() {
  setInterval(() => {
    if (!S.welcomed || !Clock.synced) return;
    const rtt = Clock.rttUs;
    const err = Clock.sync.uncertainty(Math.round(performance.timeOrigin * 1000 + performance.now() * 1000));
    if (rtt == null || err == null) return;
    const id = `r${Conn.nextId++}`;
    // Best effort: an error answering a report is not shown (onError knows the ids).
    Conn.reports.add(id);
    if (Conn.reports.size > 8) Conn.reports.delete(Conn.reports.values().next().value);
    rawSend({ type: 'report', id, rtt_ms: Math.round(rtt / 100) / 10, clock_error_ms: Math.round(err / 100) / 10 });
  }, REPORT_EVERY_MS);
}
