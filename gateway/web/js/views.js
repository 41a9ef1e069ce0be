// Everything that changes only with the state (not with time) is rendered here.
import { send } from './conn.js';
import { S, UI, isLeader, latestSeg, nameOf, shownSong } from './state.js';
import { $, el, fmtBpm } from './util.js';
import { renderChart as renderChartInto } from './chart.js';
import { flatsFor, parseChart, transposeChord } from './chordpro.js';
import { startEdit } from './controls.js';
import { Prefs } from './prefs.js';
import { quality, renderCue } from './band.js';

const ERROR_SHOW_MS = 9000;

let errorTimer = null;
export function showError(code, message) {
  const box = $('#session').hidden ? null : $('#error');
  if (!box) return showLandingError(code, message);
  box.querySelector('.error-code').textContent = code;
  box.querySelector('.error-message').textContent = message;
  box.hidden = false;
  box.classList.remove('pop');
  void box.offsetWidth; // restart the animation
  box.classList.add('pop');
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => (box.hidden = true), ERROR_SHOW_MS);
}
export function showLandingError(code, message) {
  const box = $('#landing-error');
  box.textContent = '';
  box.append(el('span', 'error-code', code), ' ', el('span', 'error-message', message));
  box.hidden = false;
}

let flashTimer = null;
export function flash(text) {
  const box = $('#request-banner');
  if (!box.hidden && box.dataset.kind === 'request') return;
  box.dataset.kind = 'note';
  $('#request-text').textContent = text;
  $('#request-accept').hidden = true;
  box.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => {
    if (box.dataset.kind === 'note') box.hidden = true;
  }, 4000);
}

export function renderStatic() {
  const st = S.state;
  const leader = isLeader();
  $('#role').textContent = st ? (leader ? 'Leader' : 'Follower') : '—';
  $('#role').dataset.role = leader ? 'leader' : 'follower';
  $('#leader-controls').hidden = !st || !leader;
  $('#quickbar').hidden = !st || !leader;
  document.body.classList.toggle('has-quickbar', !!st && leader);
  $('#follower-controls').hidden = !st || leader;
  $('#song-editor').hidden = !st || !leader;
  $('#library').hidden = !st || !leader;
  document.body.dataset.role = leader ? 'leader' : 'follower';
  if (!st) return;

  renderMembers(st, leader);
  renderSetlist(st, leader);
  renderChart();
  renderRequest(st, leader);
  renderCue(st);
  $('#cue-controls').hidden = !leader;
  syncInputs();
  UI.lastDynamic = null; // force the next frame to repaint
}

function renderMembers(st, leader) {
  const ul = $('#members');
  ul.textContent = '';
  const members = [...st.members].sort((a, b) => a.joined_at - b.joined_at);
  $('#member-count').textContent = `${members.filter((m) => m.connected).length}/${members.length} online`;
  for (const m of members) {
    const li = el('li', m.connected ? 'member on' : 'member off');
    li.dataset.member = m.id;
    li.append(el('i', 'dot'), el('span', 'name', m.name));
    if (st.leader === m.id) li.append(el('span', 'badge lead', 'leader'));
    if (m.id === S.me) li.append(el('span', 'badge you', 'you'));
    if (!m.connected) li.append(el('span', 'away', 'away'));
    const q = m.connected ? quality(m) : null;
    if (q) {
      const span = el('span', `quality ${q.grade}`, q.text);
      span.title = 'Round trip to the server · clock error bound';
      li.append(span);
    }
    if (leader && m.id !== S.me) {
      const b = el('button', 'btn small hand', 'Make leader');
      b.type = 'button';
      b.disabled = !m.connected;
      b.addEventListener('click', () => send({ type: 'hand_leadership', to: m.id }));
      const r = el('button', 'btn small ghost remove', 'Remove');
      r.type = 'button';
      r.title = `Remove ${m.name} from the band: their device is disconnected and cannot come back`;
      r.addEventListener('click', () => {
        if (confirm(`Remove ${m.name} from the band?`)) send({ type: 'remove_member', member: m.id });
      });
      li.append(b, r);
    }
    ul.append(li);
  }
  // The leader's screen shows the join link as a QR code (drawn by the gateway).
  const qrBox = $('#join-qr-box');
  qrBox.hidden = !leader || !!st.joining_closed;
  if (!qrBox.hidden && S.auth) {
    const src = `/qr.svg?origin=${encodeURIComponent(location.origin)}&code=${encodeURIComponent(S.auth.code)}`;
    if ($('#join-qr').getAttribute('src') !== src) $('#join-qr').setAttribute('src', src);
  }
  // Who else may join: the leader opens and closes the door.
  $('#joining-row').hidden = !leader && !st.joining_closed;
  $('#joining-state').textContent = st.joining_closed ? 'Joining is closed.' : 'Anyone with the code can join.';
  const jb = $('#joining-btn');
  jb.hidden = !leader;
  jb.textContent = st.joining_closed ? 'Open joining' : 'Close joining';
  jb.onclick = () => send({ type: 'joining', open: !!st.joining_closed });
}

function renderSetlist(st, leader) {
  const ol = $('#setlist');
  ol.textContent = '';
  $('#setlist-empty').hidden = st.setlist.length > 0;
  st.setlist.forEach((song, i) => {
    const li = el('li', 'song');
    if (st.song === i) li.classList.add('live');
    if (S.browse === i) li.classList.add('browsing');
    const title = el('button', 'song-name', song.title);
    title.type = 'button';
    title.title = 'Show this chart';
    title.addEventListener('click', () => browse(i));
    const info = [];
    if (song.tempo_bpm) info.push(`${fmtBpm(song.tempo_bpm)} BPM`);
    if (song.beats_per_bar) info.push(`${song.beats_per_bar}/${song.beat_unit || 4}`);
    const meta = el('span', 'song-meta', info.join(' · '));
    if (st.song === i) meta.append(el('span', 'badge live', 'live'));
    li.append(el('span', 'song-num', String(i + 1)), title, meta);
    if (leader) {
      const actions = el('span', 'song-actions');
      const load = el('button', 'btn small load', st.song === i ? 'Restart' : 'Load');
      load.type = 'button';
      load.title = 'Make this the band\u2019s song (stops and rewinds)';
      load.addEventListener('click', () => {
        S.browse = null;
        send({ type: 'song', index: i });
      });
      const edit = el('button', 'btn small ghost', 'Edit');
      edit.type = 'button';
      edit.addEventListener('click', () => startEdit(i));
      const del = el('button', 'btn small ghost danger', 'Remove');
      del.type = 'button';
      del.addEventListener('click', () => {
        const songs = st.setlist.filter((_, j) => j !== i);
        send({ type: 'setlist', songs });
      });
      actions.append(load, edit, del);
      li.append(actions);
    }
    ol.append(li);
  });
}

export function browse(i) {
  const st = S.state;
  S.browse = i === st.song ? null : i;
  renderStatic();
  // The stage is above the setlist on a phone: bring it back, the live
  // position and "Go live" with the chart (the stage is one screen high).
  const stage = $('.stage');
  const r = stage.getBoundingClientRect();
  if (r.top < 0 || r.top > window.innerHeight * 0.3) stage.scrollIntoView({ behavior: 'smooth', block: 'start' });
}

function renderChart() {
  const shown = shownSong();
  const st = S.state;
  $('#song-title').textContent = st.song != null && st.setlist[st.song] ? st.setlist[st.song].title : 'No song selected';
  // "Go live" stays in view whenever this device is not following the band.
  $('#browse-bar').hidden = !((shown && !shown.live) || UI.pinned);
  if (shown && !shown.live) $('#browse-title').textContent = `Browsing ${shown.song.title}`;
  else if (UI.pinned) $('#browse-title').textContent = 'Looking ahead in this song';
  const chart = shown ? shown.song.chart || '' : '';
  const title = shown ? shown.song.title : '';
  const pref = Prefs.song(title);
  const key = JSON.stringify([shown ? shown.index : '-', chart, pref, Prefs.show, Prefs.font, Prefs.columns]);
  if (key === UI.chartKey) return;
  if (UI.chartKey && JSON.parse(UI.chartKey)[0] !== (shown ? shown.index : '-')) {
    UI.pinned = false;
    UI.section = null;
  }
  UI.chartKey = key;
  const ol = $('#chart');
  const parsed = parseChart(chart);
  UI.chart = parsed;
  const has = parsed.lines.length > 0;
  $('#chart-empty').hidden = has;
  $('#chart-empty').textContent = shown
    ? 'This song has no chart.'
    : isLeader()
      ? 'No song loaded. Add songs to the setlist and press Load.'
      : 'No song loaded yet. The leader picks one from the setlist.';
  const capo = pref.capo ?? parsed.meta.capo;
  ol.dataset.show = Prefs.show;
  ol.classList.toggle('columns', !!Prefs.columns);
  ol.style.setProperty('--chart-scale', String(Prefs.font));
  renderChartInto(ol, parsed, { transpose: pref.transpose, capo });
  const m = parsed.meta;
  const info = [m.artist, m.key && `Key ${transposeChord(m.key, pref.transpose, flatsFor(m.key, pref.transpose))}`,
    capo > 0 && `Capo ${capo}`, pref.transpose && `transposed ${pref.transpose > 0 ? '+' : '\u2212'}${Math.abs(pref.transpose)}`]
    .filter(Boolean).join(' \u00b7 ');
  $('#chart-meta').textContent = info;
  $('#tr-value').textContent = pref.transpose > 0 ? `+${pref.transpose}` : String(pref.transpose).replace('-', '\u2212');
  $('#capo-sel').value = pref.capo == null ? '' : String(pref.capo);
  $('#show-sel').value = Prefs.show;
  $('#columns-btn').setAttribute('aria-pressed', String(!!Prefs.columns));
  UI.currentLine = -2;
  ol.scrollTop = 0;
}

function renderRequest(st, leader) {
  const box = $('#request-banner');
  const req = st.leadership_request;
  if (leader && req && req !== S.me) {
    box.dataset.kind = 'request';
    $('#request-text').textContent = `${nameOf(req)} asks to lead.`;
    $('#request-accept').hidden = false;
    $('#request-accept').onclick = () => send({ type: 'hand_leadership', to: req });
    box.hidden = false;
  } else if (box.dataset.kind === 'request') {
    box.hidden = true;
    box.dataset.kind = '';
  }
  // A returning ex-leader: leadership moved while they were away (the grace rule).
  const displaced = !leader && st.displaced_leader === S.me;
  $('#displaced').hidden = !displaced;
  if (displaced) $('#displaced-text').textContent = `While you were away, ${nameOf(st.leader)} took over as leader.`;
  const btn = $('#request-btn');
  const waiting = req === S.me;
  btn.disabled = waiting;
  btn.textContent = waiting ? `Waiting for ${nameOf(st.leader)}…` : 'Ask to lead';
}

export function syncInputs() {
  const seg = latestSeg();
  // Transport reflects where the timeline is heading (its last scheduled segment).
  $('#play-btn').disabled = seg.playing;
  $('#pause-btn').disabled = !seg.playing;
  $('#stop-btn').disabled = !seg.playing && seg.anchor_beat === 0;
  $('#q-play').textContent = seg.playing ? '❚❚ Pause' : '▶ Play';
  $('#q-play').classList.toggle('play', !seg.playing);
  $('#q-stop').disabled = $('#stop-btn').disabled;
  // The quick bar says what comes next, and changes song only when not playing.
  const st = S.state;
  const next = st.song != null ? st.setlist[st.song + 1] : st.setlist[0];
  $('#q-next-title').textContent = next ? `Next: ${next.title}` : 'Last song';
  $('#q-prev').disabled = seg.playing || !(st.song > 0);
  $('#q-next').disabled = seg.playing || !next;
  const now = performance.now();
  const ti = $('#tempo-input');
  if (document.activeElement !== ti && now > UI.tempoDirty) ti.value = fmtBpm(seg.tempo_bpm);
  $('#q-bpm').textContent = ti.value;
  const mb = $('#meter-beats');
  const mu = $('#meter-unit');
  if (document.activeElement !== mb && document.activeElement !== mu) {
    mb.value = seg.beats_per_bar;
    mu.value = String(seg.beat_unit);
  }
}
