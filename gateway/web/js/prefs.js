// Per-device preferences, kept in localStorage across reloads: how this
// device shows charts (transpose and capo per song, font size, lyrics or
// chords only, two columns).
import { store } from './util.js';

const KEY = 'bandsync.view';
const DEFAULTS = { font: 1, show: 'both', columns: false, songs: {} };

export const Prefs = {
  ...DEFAULTS,
  ...(store.get('localStorage', KEY) || {}),
  save() {
    const { font, show, columns, songs } = this;
    store.set('localStorage', KEY, { font, show, columns, songs });
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
