// ChordPro (chordpro.org, version 6), the subset a band's charts use, parsed
// into lines that know which bars they hold. Pure: no DOM, tested in node.
//
// The bar rule (docs/protocol.md, "Charts"; the page's help says the same):
// - a grid line (inside {start_of_grid}) holds as many bars as its `|` cells;
// - any other line with lyrics or chords holds one bar (so the old plain
//   charts, one line per bar, keep working);
// - directives, section headers, comments and blank lines hold none;
// - {chorus} plays the last chorus again: its lines are repeated, bars and all.

const ALIASES = {
  t: 'title', st: 'subtitle', c: 'comment', ci: 'comment_italic', cb: 'comment_box',
  soc: 'start_of_chorus', eoc: 'end_of_chorus', sov: 'start_of_verse', eov: 'end_of_verse',
  sob: 'start_of_bridge', eob: 'end_of_bridge', sog: 'start_of_grid', eog: 'end_of_grid',
  sot: 'start_of_tab', eot: 'end_of_tab', g: 'grid', ng: 'no_grid',
};
const META = new Set(['title', 'subtitle', 'artist', 'composer', 'album', 'year', 'key', 'tempo', 'time', 'capo', 'duration']);
const SECTION_NAMES = { chorus: 'Chorus', verse: 'Verse', bridge: 'Bridge', grid: 'Grid', tab: 'Tab' };

/** `{name: value}` or `{name label="x"}` → {name, value}; null if the line is not a directive. */
function directive(line) {
  const m = /^\{\s*([A-Za-z_][\w-]*)\s*(?::\s*([\s\S]*?))?\s*\}\s*$/.exec(line) || /^\{\s*([A-Za-z_][\w-]*)\s+([\s\S]*?)\s*\}\s*$/.exec(line);
  if (!m) return null;
  const name = m[1].toLowerCase();
  let value = (m[2] ?? '').trim();
  const label = /(?:^|\s)label="([^"]*)"/.exec(value);
  if (label) value = label[1];
  return { name: ALIASES[name] || name, value };
}

/** "[G]Amazing [C/B]grace" → [{chord: null, text: ''}, {chord: 'G', text: 'Amazing '}, ...]. */
export function chordLine(line) {
  const parts = [];
  const re = /\[([^\]]*)\]/g;
  let last = 0;
  let chord = null;
  let m;
  while ((m = re.exec(line))) {
    if (m.index > last || chord !== null) parts.push({ chord, text: line.slice(last, m.index) });
    chord = m[1].trim();
    last = re.lastIndex;
  }
  parts.push({ chord, text: line.slice(last) });
  return parts.filter((p, i) => i > 0 || p.chord !== null || p.text !== '');
}

/** A grid line "A  | Am . . . | C . . . |  x2" → {margin, cells: [['Am','.','.','.'], ...], note}. */
export function gridLine(line) {
  const norm = line.replace(/\|\||\|:|:\||\|\./g, '|');
  const first = norm.indexOf('|');
  const lastBar = norm.lastIndexOf('|');
  if (first < 0) return null;
  const inner = norm.slice(first + 1, lastBar > first ? lastBar : norm.length);
  const cells = inner.split('|').map((c) => c.trim().split(/\s+/).filter(Boolean)).filter((c) => c.length);
  return { margin: norm.slice(0, first).trim(), cells, note: lastBar > first ? norm.slice(lastBar + 1).trim() : '' };
}

/** "6/8" → {beats: 6, unit: 8}, or null. */
export function parseTime(v) {
  const m = /^\s*(\d{1,2})\s*\/\s*(\d{1,2})\s*$/.exec(v || '');
  if (!m) return null;
  const beats = Number(m[1]);
  const unit = Number(m[2]);
  return beats >= 1 && beats <= 32 && [2, 4, 8, 16].includes(unit) ? { beats, unit } : null;
}

/**
 * Parses a chart. Returns {meta, lines, bars}: `lines` in display order, each
 * {kind, ...} with `bar` (first bar, 0-based) and `bars` (how many) when it holds bars:
 * kind 'section' {label, type}, 'comment' {text, style}, 'blank', 'lyrics' {parts},
 * 'grid' {margin, cells, note}, 'tab' {text}.
 */
export function parseChart(text) {
  const meta = {};
  const lines = [];
  let bar = 0;
  let section = null; // {type, lines: []} while inside a section
  let lastChorus = null;
  const push = (line) => {
    if (line.bars) {
      line.bar = bar;
      bar += line.bars;
    }
    lines.push(line);
    if (section) section.lines.push(line);
  };
  for (const raw of String(text || '').replace(/\r\n?/g, '\n').replace(/\s+$/, '').split('\n')) {
    const line = raw.replace(/\s+$/, '');
    if (/^#/.test(line)) continue; // a ChordPro comment for the file's author
    const d = line.trim().startsWith('{') ? directive(line.trim()) : null;
    if (d) {
      const start = /^start_of_(\w+)$/.exec(d.name);
      const end = /^end_of_(\w+)$/.exec(d.name);
      if (META.has(d.name)) {
        if (!(d.name in meta)) meta[d.name] = d.value;
      } else if (d.name === 'meta') {
        const mm = /^(\w+)\s+(.*)$/.exec(d.value);
        if (mm && META.has(mm[1].toLowerCase()) && !(mm[1].toLowerCase() in meta)) meta[mm[1].toLowerCase()] = mm[2];
      } else if (start) {
        const type = start[1];
        section = { type, lines: [] };
        const label = d.value || SECTION_NAMES[type] || type.replace(/_/g, ' ');
        if (type !== 'grid' || d.value) push({ kind: 'section', type, label });
      } else if (end) {
        if (section && section.type === 'chorus') lastChorus = section;
        section = null;
      } else if (d.name === 'chorus') {
        const label = d.value || 'Chorus';
        push({ kind: 'section', type: 'chorus', label, recall: true });
        for (const l of lastChorus ? lastChorus.lines : []) {
          if (l.kind !== 'section') push({ ...l, bar: undefined });
        }
      } else if (d.name.startsWith('comment') || d.name === 'highlight') {
        push({ kind: 'comment', text: d.value, style: d.name });
      }
      continue; // other directives (fonts, columns, new_page...) change nothing here
    }
    if (!line.trim()) {
      push({ kind: 'blank' });
    } else if (section && section.type === 'tab') {
      push({ kind: 'tab', text: line });
    } else if (section && section.type === 'grid') {
      const g = gridLine(line);
      if (g && g.cells.length) push({ kind: 'grid', ...g, bars: g.cells.length });
      else push({ kind: 'comment', text: line.trim(), style: 'comment' });
    } else {
      push({ kind: 'lyrics', parts: chordLine(line), bars: 1 });
    }
  }
  const time = parseTime(meta.time);
  const tempo = Number(meta.tempo);
  const capo = Number(meta.capo);
  return {
    meta: {
      ...meta,
      tempo_bpm: tempo >= 20 && tempo <= 400 ? tempo : null,
      beats_per_bar: time ? time.beats : null,
      beat_unit: time ? time.unit : null,
      capo: capo >= 1 && capo <= 12 ? capo : 0,
    },
    lines,
    bars: bar,
  };
}

// ------------------------------------------------------------ transposing
const SHARPS = ['C', 'C#', 'D', 'D#', 'E', 'F', 'F#', 'G', 'G#', 'A', 'A#', 'B'];
const FLATS = ['C', 'Db', 'D', 'Eb', 'E', 'F', 'Gb', 'G', 'Ab', 'A', 'Bb', 'B'];
const NOTE = { C: 0, D: 2, E: 4, F: 5, G: 7, A: 9, B: 11 };

function noteIndex(n) {
  let i = NOTE[n[0].toUpperCase()];
  for (const a of n.slice(1)) i += a === '#' ? 1 : a === 'b' ? -1 : 0;
  return ((i % 12) + 12) % 12;
}

/** Moves one chord name `semis` semitones; what is not a chord (".", "%", "N.C.") is left alone. */
export function transposeChord(chord, semis, flats = false) {
  if (!semis) return chord;
  const names = flats ? FLATS : SHARPS;
  const m = /^([A-G][#b]?)([^/]*)(?:\/([A-G][#b]?))?$/.exec(chord);
  if (!m) return chord;
  const move = (n) => names[(noteIndex(n) + semis + 120) % 12];
  return move(m[1]) + m[2] + (m[3] ? `/${move(m[3])}` : '');
}

/** Whether chords in `key` moved by `semis` are spelled with flats (as that key is written). */
export function flatsFor(key, semis) {
  const m = /^([A-G][#b]?)(m(?!aj))?/.exec(key || '');
  if (!m) return semis < 0; // no key: flats going down, sharps going up
  const idx = (noteIndex(m[1]) + semis + 120) % 12;
  // Db Eb F Ab Bb major; Cm Dm Ebm Fm Gm Bbm minor.
  return (m[2] ? [0, 2, 3, 5, 7, 10] : [1, 3, 5, 8, 10]).includes(idx);
}

// ------------------------------------------------------- files and songs
/** Splits a ChordPro file holding several songs at {new_song} / {ns}. */
export function splitSongs(text) {
  const songs = [[]];
  for (const line of String(text || '').replace(/\r\n?/g, '\n').split('\n')) {
    if (/^\s*\{\s*(new_song|ns)\s*\}\s*$/i.test(line)) songs.push([]);
    else songs[songs.length - 1].push(line);
  }
  return songs.map((l) => l.join('\n').trim()).filter(Boolean);
}

/** A setlist entry from one song's ChordPro: title, tempo and meter from its directives. */
export function songFromChordPro(text, fallbackTitle = 'Untitled') {
  const { meta } = parseChart(text);
  const song = { title: (meta.title || fallbackTitle).trim().slice(0, 100), chart: text };
  if (meta.tempo_bpm) song.tempo_bpm = meta.tempo_bpm;
  if (meta.beats_per_bar) song.beats_per_bar = meta.beats_per_bar;
  if (meta.beat_unit) song.beat_unit = meta.beat_unit;
  return song;
}

/** One song as ChordPro: its chart, with {title}, {tempo} and {time} added where the chart lacks them. */
export function songToChordPro(song) {
  const chart = song.chart || '';
  const { meta } = parseChart(chart);
  const head = [];
  if (!meta.title) head.push(`{title: ${song.title}}`);
  if (!meta.tempo && song.tempo_bpm) head.push(`{tempo: ${song.tempo_bpm}}`);
  if (!meta.time && song.beats_per_bar) head.push(`{time: ${song.beats_per_bar}/${song.beat_unit || 4}}`);
  return [...head, chart.trim()].filter(Boolean).join('\n');
}

/** A setlist as one ChordPro file, songs separated by {new_song}. */
export function setlistToChordPro(songs) {
  return `${songs.map(songToChordPro).join('\n{new_song}\n')}\n`;
}
