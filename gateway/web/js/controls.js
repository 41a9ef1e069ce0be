// The controls: buttons, forms, keys, and the screen wake lock.
import { send, Conn, connect, disconnect, ping } from './conn.js';
import { createSession, enterSession, joinSession, showLanding } from './session.js';
import { Sound } from './sound.js';
import { parseChart } from './chordpro.js';
import { goLive, song, wireKeys } from './keys.js';
import { wireLibrary } from './library.js';
import { TAPS_NEEDED, offsetFromTaps } from './latency.js';
import { Clock } from './clock.js';
import { MAX_TEXT_BYTES, utf8Bytes } from './band.js';
import { Prefs } from './prefs.js';
import { AUTH_KEY, LAST_KEY, S, UI, isLeader, latestSeg, shownSong } from './state.js';
import { Timeline } from './timeline.js';
import { $, fmtBpm, store } from './util.js';
import { flash, renderStatic, showError, showLandingError } from './views.js';

const JOIN_ALPHABET = /^[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{6}([ABCDEFGHJKMNPQRSTUVWXYZ23456789]{2})?$/;

let tempoTimer = null;
function setTempoSoon(bpm, delay) {
  bpm = Math.round(Math.min(400, Math.max(20, bpm)) * 10) / 10;
  $('#tempo-input').value = fmtBpm(bpm);
  $('#q-bpm').textContent = fmtBpm(bpm);
  UI.tempoDirty = performance.now() + delay + 1500;
  clearTimeout(tempoTimer);
  tempoTimer = setTimeout(() => send({ type: 'tempo', bpm }), delay);
}

const taps = [];
let tapTimer = null;
function tap() {
  const now = performance.now();
  if (taps.length && now - taps[taps.length - 1] > 2000) taps.length = 0;
  taps.push(now);
  if (taps.length > 8) taps.shift();
  const btn = $('#tap-btn');
  btn.classList.remove('tapped');
  void btn.offsetWidth;
  btn.classList.add('tapped');
  if (taps.length >= 2) {
    const gaps = taps.slice(1).map((t, i) => t - taps[i]);
    const bpm = 60000 / (gaps.reduce((a, b) => a + b, 0) / gaps.length);
    $('#tempo-input').value = String(Math.round(bpm));
    UI.tempoDirty = now + 3000;
  }
  clearTimeout(tapTimer);
  if (taps.length >= 4) {
    tapTimer = setTimeout(() => {
      const v = Number($('#tempo-input').value);
      if (v >= 20 && v <= 400) send({ type: 'tempo', bpm: v });
      taps.length = 0;
    }, 1200);
  }
}

/**
 * The song in the editor. Where the BPM, beats per bar or unit are left
 * empty, the chart's {tempo} and {time} fill them in (and {title} the title).
 */
export function readSong() {
  const chart = $('#song-chart').value.replace(/\r\n?/g, '\n');
  const { meta } = parseChart(chart);
  const title = $('#song-title-in').value.trim() || (meta.title || '').trim();
  const bpm = $('#song-bpm').value.trim();
  const bpb = $('#song-bpb').value.trim();
  const unit = $('#song-unit').value;
  const song = { title };
  if (chart.trim()) song.chart = chart;
  const tempo = bpm ? Number(bpm) : meta.tempo_bpm;
  if (tempo) song.tempo_bpm = tempo;
  const beats = bpb ? Number(bpb) : meta.beats_per_bar;
  if (beats) song.beats_per_bar = beats;
  const beatUnit = unit ? Number(unit) : meta.beat_unit;
  if (beatUnit) song.beat_unit = beatUnit;
  return song;
}

export function startEdit(i) {
  const song = S.state.setlist[i];
  S.editing = i;
  $('#song-title-in').value = song.title;
  $('#song-bpm').value = song.tempo_bpm ?? '';
  $('#song-bpb').value = song.beats_per_bar ?? '';
  $('#song-unit').value = song.beat_unit ? String(song.beat_unit) : '';
  $('#song-chart').value = song.chart || '';
  $('#song-save').textContent = 'Save song';
  $('#song-editor-summary').textContent = `Edit “${song.title}”`;
  $('#song-cancel').hidden = false;
  $('#song-editor').open = true;
  $('#song-title-in').focus();
}
function resetEditor() {
  S.editing = null;
  $('#song-form').reset();
  $('#song-save').textContent = 'Add song';
  $('#song-editor-summary').textContent = 'Add a song';
  $('#song-cancel').hidden = true;
}

export function wire() {
  $('#create-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = $('#create-name').value.trim();
    if (!name) return showLandingError('invalid', 'Type your name first.');
    $('#create-btn').disabled = true;
    try {
      await createSession(name);
    } catch (err) {
      showLandingError(err.code, err.message);
    } finally {
      $('#create-btn').disabled = false;
    }
  });
  $('#join-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const code = $('#join-code').value.replace(/[\s-]/g, '').toUpperCase();
    const name = $('#join-name').value.trim();
    if (!JOIN_ALPHABET.test(code)) {
      return showLandingError('invalid', 'A join code is eight letters and digits, like K7MQ-2XBD.');
    }
    if (!name) return showLandingError('invalid', 'Type your name first.');
    $('#join-btn').disabled = true;
    try {
      await joinSession(code, name);
    } catch (err) {
      showLandingError(err.code, err.message);
    } finally {
      $('#join-btn').disabled = false;
    }
  });
  $('#join-code').addEventListener('input', (e) => {
    const v = e.target.value.toUpperCase();
    if (v !== e.target.value) e.target.value = v;
  });
  $('#rejoin-btn').addEventListener('click', () => {
    const last = store.get('localStorage', LAST_KEY);
    if (last) enterSession(last);
  });
  $('#rejoin-forget').addEventListener('click', () => {
    store.set('localStorage', LAST_KEY, null);
    $('#rejoin').hidden = true;
  });

  $('#leave-btn').addEventListener('click', () => {
    releaseScreen();
    disconnect();
    Sound.disable();
    updateSoundBtn();
    S.auth = null;
    S.state = null;
    S.timeline = null;
    store.set('sessionStorage', AUTH_KEY, null);
    store.set('localStorage', LAST_KEY, null);
    showLanding();
  });
  $('#error .close').addEventListener('click', () => ($('#error').hidden = true));
  $('#join-code-big').parentElement.addEventListener('click', () => {
    const link = `${location.origin}/?join=${S.auth ? S.auth.code : ''}`;
    navigator.clipboard?.writeText(link).then(() => flash('Join link copied.'), () => {});
  });

  $('#sound-btn').addEventListener('click', async () => {
    if (Sound.on) Sound.disable();
    else await Sound.enable();
    updateSoundBtn();
  });

  $('#play-btn').addEventListener('click', () => send({ type: 'play', count_in_bars: Number($('#count-in').value) }));
  $('#pause-btn').addEventListener('click', () => send({ type: 'pause' }));
  $('#q-play').addEventListener('click', () => {
    if (latestSeg().playing) send({ type: 'pause' });
    else send({ type: 'play', count_in_bars: Number($('#count-in').value) });
  });
  $('#q-stop').addEventListener('click', () => send({ type: 'stop' }));
  $('#q-prev').addEventListener('click', () => song(-1));
  $('#q-next').addEventListener('click', () => song(+1));
  $('#q-down').addEventListener('click', () => setTempoSoon(Number($('#tempo-input').value) - 1, 400));
  $('#q-up').addEventListener('click', () => setTempoSoon(Number($('#tempo-input').value) + 1, 400));
  $('#stop-btn').addEventListener('click', () => send({ type: 'stop' }));
  $('#seek-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const bar = Math.floor(Number($('#seek-bar').value));
    if (!(bar >= 1)) return showError('invalid', 'Bars are numbered from 1.');
    const beat = Timeline.beatOfBar(latestSeg(), bar - 1);
    if (beat < 0) return showError('invalid', `Bar ${bar} lies before the start.`);
    send({ type: 'seek', beat });
  });

  $('#tempo-down').addEventListener('click', () => setTempoSoon(Number($('#tempo-input').value) - 1, 400));
  $('#tempo-up').addEventListener('click', () => setTempoSoon(Number($('#tempo-input').value) + 1, 400));
  $('#tempo-set').addEventListener('click', () => setTempoSoon(Number($('#tempo-input').value), 0));
  $('#tempo-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') setTempoSoon(Number(e.target.value), 0);
  });
  $('#tap-btn').addEventListener('pointerdown', (e) => {
    e.preventDefault();
    tap();
  });
  $('#meter-form').addEventListener('submit', (e) => {
    e.preventDefault();
    send({ type: 'meter', beats_per_bar: Number($('#meter-beats').value), beat_unit: Number($('#meter-unit').value) });
  });

  $('#request-btn').addEventListener('click', () => send({ type: 'request_leadership' }));
  $('#go-live').addEventListener('click', goLive);

  $('#song-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const song = readSong();
    if (!song.title) return showError('invalid', 'A song needs a title.');
    const songs = [...S.state.setlist];
    if (S.editing != null && S.editing < songs.length) songs[S.editing] = song;
    else songs.push(song);
    if (send({ type: 'setlist', songs })) resetEditor();
  });
  $('#song-cancel').addEventListener('click', resetEditor);

  wireChartTools();
  wireBand();
  wireClickSettings();
  wireLibrary();
  $('#chart').addEventListener('wheel', () => (UI.userScrolledAt = performance.now()), { passive: true });
  $('#chart').addEventListener('touchmove', () => (UI.userScrolledAt = performance.now()), { passive: true });

  document.addEventListener('visibilitychange', () => {
    if (document.hidden) return;
    ping(); // timers were throttled: refresh the clock at once
    holdScreen();
  });
  document.addEventListener('pointerdown', holdScreen);
  wireKeys();
  window.addEventListener('online', () => {
    if (Conn.wanted && !Conn.ws) {
      Conn.attempt = 0;
      connect();
    }
  });
}

// Keep the screen on while in a session: a phone that dims mid-song is no use on stage.
let wakeLock = null;
export async function holdScreen() {
  if (wakeLock || !navigator.wakeLock || document.hidden || !S.auth) return;
  try {
    wakeLock = await navigator.wakeLock.request('screen');
    wakeLock.addEventListener('release', () => (wakeLock = null));
  } catch {
    /* not allowed yet: tried again on the next tap */
  }
}
export function releaseScreen() {
  wakeLock?.release().catch(() => {});
  wakeLock = null;
}

export function updateSoundBtn() {
  const b = $('#sound-btn');
  b.textContent = Sound.on ? '\u266a Click: on' : '\u266a Click: off';
  b.setAttribute('aria-pressed', String(Sound.on));
  b.classList.toggle('on', Sound.on);
}

// The chart's view on this device: transpose and capo per song, text size,
// lyrics or chords only, two columns; kept in localStorage (prefs.js).
function wireChartTools() {
  const title = () => shownSong()?.song.title || '';
  const redraw = () => renderStatic();
  $('#tr-down').addEventListener('click', () => {
    Prefs.setSong(title(), { transpose: Math.max(-11, Prefs.song(title()).transpose - 1) });
    redraw();
  });
  $('#tr-up').addEventListener('click', () => {
    Prefs.setSong(title(), { transpose: Math.min(11, Prefs.song(title()).transpose + 1) });
    redraw();
  });
  $('#capo-sel').addEventListener('change', (e) => {
    Prefs.setSong(title(), { capo: e.target.value === '' ? null : Number(e.target.value) });
    redraw();
  });
  const font = (f) => {
    Prefs.font = Math.round(Math.min(2, Math.max(0.6, f)) * 10) / 10;
    Prefs.save();
    redraw();
  };
  $('#font-down').addEventListener('click', () => font(Prefs.font - 0.1));
  $('#font-up').addEventListener('click', () => font(Prefs.font + 0.1));
  $('#show-sel').addEventListener('change', (e) => {
    Prefs.show = e.target.value;
    Prefs.save();
    redraw();
  });
  $('#columns-btn').addEventListener('click', () => {
    Prefs.columns = !Prefs.columns;
    Prefs.save();
    redraw();
  });
}

// Cues (leader) and messages (anyone): short texts, counted in UTF-8 bytes.
function wireBand() {
  const sendText = (type, input) => {
    const text = input.value.trim();
    if (type === 'message' && !text) return;
    if (utf8Bytes(text) > MAX_TEXT_BYTES) return showError('invalid', `At most ${MAX_TEXT_BYTES} bytes.`);
    if (send({ type, text })) input.value = '';
  };
  $('#cue-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sendText('cue', $('#cue-input'));
  });
  for (const b of document.querySelectorAll('#cue-controls [data-cue]')) {
    b.addEventListener('click', () => send({ type: 'cue', text: b.dataset.cue }));
  }
  $('#cue-clear').addEventListener('click', () => send({ type: 'cue', text: '' }));
  $('#message-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sendText('message', $('#message-input'));
  });
  $('#displaced-take').addEventListener('click', () => send({ type: 'request_leadership' }));
}

// The click on this device: kept in localStorage (Prefs.click), applied to
// the next clicks scheduled (sound.js) and to the frame's flash and vibration.
function wireClickSettings() {
  const c = Prefs.click;
  const fields = [
    ['#click-volume', 'volume', (e) => Number(e.value), (e, v) => (e.value = String(v))],
    ['#click-sound', 'sound', (e) => e.value, (e, v) => (e.value = v)],
    ['#click-sub', 'subdivision', (e) => Number(e.value), (e, v) => (e.value = String(v))],
    ['#click-accent', 'accent', (e) => e.checked, (e, v) => (e.checked = v)],
    ['#click-visual', 'visualOnly', (e) => e.checked, (e, v) => (e.checked = v)],
    ['#click-vibrate', 'vibrate', (e) => e.checked, (e, v) => (e.checked = v)],
    ['#click-latency', 'latencyMs', (e) => Math.max(-300, Math.min(300, Number(e.value) || 0)), (e, v) => (e.value = String(v))],
  ];
  for (const [sel, key, read, write] of fields) {
    const input = $(sel);
    write(input, c[key]);
    input.addEventListener('change', () => {
      c[key] = read(input);
      Prefs.save();
      Sound.retune();
    });
  }
  $('#click-vibrate-row').hidden = !('vibrate' in navigator);

  // Tap along with the click while the band plays: the taps' median lateness
  // becomes the offset (latency.js).
  let taps = null;
  const hint = $('#click-calibrate-hint');
  const btn = $('#click-calibrate');
  btn.addEventListener('pointerdown', (e) => {
    e.preventDefault();
    if (!taps) {
      if (!Sound.on || !S.timeline || !latestSeg().playing) {
        hint.hidden = false;
        hint.textContent = 'Turn the click on while the band plays, then tap this button on every click you hear.';
        return;
      }
      taps = [];
      btn.textContent = 'Tap on each click…';
      hint.hidden = false;
      hint.textContent = `Tap ${TAPS_NEEDED} times, on the clicks.`;
      return;
    }
    taps.push(Clock.serverNow());
    const offset = offsetFromTaps(S.timeline, taps, c.latencyMs);
    if (offset == null) {
      hint.textContent = `${TAPS_NEEDED - taps.length} more…`;
      return;
    }
    c.latencyMs = offset;
    $('#click-latency').value = String(offset);
    Prefs.save();
    Sound.retune();
    taps = null;
    btn.textContent = 'Calibrate: tap along';
    hint.textContent = `Latency offset set to ${offset} ms.`;
  });
}
