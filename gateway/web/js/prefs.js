// Per-device preferences, kept in localStorage across reloads: how this
// device shows charts (transpose and capo per song, font size, lyrics or
// chords only, two columns) and how its click sounds.
import { store } from './util.js';

const KEY = 'bandsync.view';
const CLICK = { volume: 0.8, sound: 'beep', subdivision: 1, accent: true, visualOnly: false, vibrate: false, latencyMs: 0 };
const DEFAULTS = { font: 1, show: 'both', columns: false, songs: {}, click: CLICK };

export const Prefs = {
  ...DEFAULTS,
  ...(store.get('localStorage', KEY) || {}),
  save() {
    const { font, show, columns, songs, click } = this;
    store.set('localStorage', KEY, { font, show, columns, songs, click });
  },
  /** Transpose (semitones, concert pitch) and capo for a song, by title. */
  song(title) {
    return { transpose: 0, capo: null, ...(this.songs[title] || {}) };
  },
  setSong(title, change) {
    const next = { ...this.song(title), ...change };
    if (next.transpose === 0 && next.capo == null) delete this.songs[title];
    else this.songs[title] = next;
    this.save();
  },
};

Prefs.click = { ...CLICK, ...(Prefs.click || {}) };
