// Rendered every animation frame: the position, the beat lights and the
// current chart line, computed from the timeline and the synced clock.
import { Clock } from './clock.js';
import { S, UI, shownSong } from './state.js';
import { announce } from './band.js';
import { Conn } from './conn.js';
import { Prefs } from './prefs.js';
import { Sound } from './sound.js';
import { lineOfBar } from './chart.js';
import { Timeline } from './timeline.js';
import { $, el, fmtBpm } from './util.js';

export function frame() {
  requestAnimationFrame(frame);
  if (!S.timeline || $('#session').hidden) return;
  const t = Clock.serverNow();
  const d = Timeline.describe(S.timeline, t);
  const seg = d.seg;
  const flashOn = (d.mode === 'playing' || d.mode === 'count-in') && d.frac < 0.22;
  const key = `${Conn.state}|${d.text}|${d.mode}|${flashOn}|${seg.beats_per_bar}|${seg.beat_unit}|${seg.tempo_bpm}`;
  if (key === UI.lastDynamic) return;
  UI.lastDynamic = key;

  $('#pos-bar').textContent = d.text.split(':')[0];
  $('#pos-beat').textContent = String(d.beat);
  const position = $('#position');
  position.dataset.mode = d.mode;
  position.classList.toggle('accent', flashOn && d.beatIndex === 0);
  const status = $('#status');
  status.dataset.mode = d.mode;
  if (d.mode !== UI.lastMode) {
    // Screen readers hear the count-in start (with its length) and the music start.
    if (d.mode === 'count-in') announce(`Count-in, ${-d.bar} ${d.bar === -1 ? 'bar' : 'bars'}`);
    else if (d.mode === 'playing' && UI.lastMode === 'count-in') announce('Playing');
    UI.lastMode = d.mode;
  }
  // A position this device cannot vouch for is not called "Playing".
  const stale = Conn.state === 'stale';
  status.dataset.stale = String(stale);
  status.textContent = stale ? 'Out of sync' : {
    'count-in': 'Count-in',
    playing: 'Playing',
    starting: 'Starting…',
    stopped: 'Stopped',
    paused: 'Paused',
  }[d.mode];
  // Visual-only click: the whole panel flashes; vibration where the device has it.
  $('.now').classList.toggle('beat-flash', flashOn && Prefs.click.visualOnly);
  if (flashOn && d.beatIndex !== UI.lastBeat && Prefs.click.vibrate && Sound.on && navigator.vibrate) {
    navigator.vibrate(d.beatIndex === 0 ? 45 : 20);
  }
  UI.lastBeat = flashOn ? d.beatIndex : null;
  $('#tempo').textContent = fmtBpm(seg.tempo_bpm);
  $('#meter').textContent = `${seg.beats_per_bar}/${seg.beat_unit}`;

  // Beat lights: one per beat of the bar, the current one lit, beat 1 accented.
  const lights = $('#lights');
  const n = seg.beats_per_bar;
  if (lights.childElementCount !== n) {
    lights.textContent = '';
    for (let i = 0; i < n; i++) lights.append(el('span', i === 0 ? 'light one' : 'light'));
  }
  lights.dataset.mode = d.mode;
  [...lights.children].forEach((light, i) => {
    light.classList.toggle('current', i === d.beatIndex && d.mode !== 'stopped');
    light.classList.toggle('on', i === d.beatIndex && flashOn);
  });

  // Chart: highlight the current bar's line and keep it in view.
  const shown = shownSong();
  if (shown && shown.live) {
    let line = d.chartBar;
    if (d.mode === 'stopped') line = -1;
    if (d.countIn) line = Timeline.barOf(seg, seg.count_in_until) * -1 - 1; // marks "next" below
    highlightLine(d, line);
  } else if (UI.currentLine !== -2) {
    highlightLine(d, -1);
  }
}

function highlightLine(d, line) {
  const ol = $('#chart');
  const next = d.countIn ? Timeline.barOf(d.seg, d.seg.count_in_until) : null;
  const target = d.countIn ? next : line;
  const id = `${d.countIn ? 'n' : 'c'}${target}`;
  if (id === UI.currentLine) return;
  UI.currentLine = id;
  const focus = lineOfBar(ol, target);
  for (const li of ol.querySelectorAll('li[data-bar]')) {
    const first = Number(li.dataset.bar);
    const isCurrent = !d.countIn && li === focus;
    li.classList.toggle('current', isCurrent);
    li.classList.toggle('next', d.countIn && li === focus);
    li.classList.toggle('past', !d.countIn && line >= 0 && first + Number(li.dataset.bars) <= line);
    if (isCurrent) li.setAttribute('aria-current', 'true');
    else li.removeAttribute('aria-current');
  }
  for (const cell of ol.querySelectorAll('.cell')) cell.classList.toggle('current', Number(cell.dataset.bar) === target);
  if (focus && !UI.pinned && performance.now() - UI.userScrolledAt > 4000) {
    const top = focus.offsetTop - ol.clientHeight * 0.3;
    ol.scrollTo({ top: Math.max(0, top), behavior: 'smooth' });
  }
}
