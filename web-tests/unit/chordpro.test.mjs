// The ChordPro parser: directives, sections, the bar rule, inline chords, grids, transposing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chordLine, flatsFor, gridLine, parseChart, transposeChord } from '../../gateway/web/js/chordpro.js';

const SONG = `{title: Amazing Grace}
{artist: John Newton}
{key: G}
{tempo: 96}
{time: 6/8}
{capo: 2}
# a note for whoever edits this file

{start_of_verse: Verse 1}
[G]Amazing [G7]grace, how [C]sweet the [G]sound
That [G]saved a wretch like [D]me
{end_of_verse}

{soc}
[C]I once was [G]lost
{eoc}
{comment: Band in}
{start_of_grid label="Solo"}
A | Am . . . | C . . . |
  | G . . . | D . . . | F . . . | x2
{end_of_grid}
{chorus}
`;

test('metadata from the directives: title, artist, key, tempo, 6/8, capo', () => {
  const { meta } = parseChart(SONG);
  assert.equal(meta.title, 'Amazing Grace');
  assert.equal(meta.artist, 'John Newton');
  assert.equal(meta.key, 'G');
  assert.equal(meta.tempo_bpm, 96);
  assert.equal(meta.beats_per_bar, 6);
  assert.equal(meta.beat_unit, 8);
  assert.equal(meta.capo, 2);
});

test('the bar rule: a lyric line one bar, a grid line one per cell, the chorus recall again; headers, comments, blanks none', () => {
  const { lines, bars } = parseChart(SONG);
  const withBars = lines.filter((l) => l.bars).map((l) => [l.kind, l.bar, l.bars]);
  assert.deepEqual(withBars, [
    ['lyrics', 0, 1], ['lyrics', 1, 1], // verse
    ['lyrics', 2, 1], // chorus
    ['grid', 3, 2], ['grid', 5, 3], // solo
    ['lyrics', 8, 1], // {chorus} recalled
  ]);
  assert.equal(bars, 9);
  const kinds = lines.map((l) => (l.kind === 'section' ? `section:${l.label}` : l.kind));
  assert.deepEqual(kinds, [
    'blank', 'section:Verse 1', 'lyrics', 'lyrics', 'blank', 'section:Chorus', 'lyrics', 'comment',
    'section:Solo', 'grid', 'grid', 'section:Chorus', 'lyrics',
  ]);
});

test('an old plain chart: one bar per line, blank lines none', () => {
  const { lines, bars } = parseChart('| C | G |\n| Am | F |\n\n| C | G |');
  assert.deepEqual(lines.filter((l) => l.bars).map((l) => l.bar), [0, 1, 2]);
  assert.equal(bars, 3);
  assert.deepEqual(lines[0].parts, [{ chord: null, text: '| C | G |' }]);
});

test('inline chords sit over the syllable that follows them', () => {
  assert.deepEqual(chordLine('[G]Amazing [C]gra[D]ce'), [
    { chord: 'G', text: 'Amazing ' }, { chord: 'C', text: 'gra' }, { chord: 'D', text: 'ce' },
  ]);
  assert.deepEqual(chordLine('That [G]saved'), [{ chord: null, text: 'That ' }, { chord: 'G', text: 'saved' }]);
  assert.deepEqual(chordLine('[Am] [F]'), [{ chord: 'Am', text: ' ' }, { chord: 'F', text: '' }]);
});

test('grid lines: margin, cells, trailing note; repeat and end bar lines', () => {
  assert.deepEqual(gridLine('A || Am . . . |: C . . . :| x2'), {
    margin: 'A', cells: [['Am', '.', '.', '.'], ['C', '.', '.', '.']], note: 'x2',
  });
  assert.equal(gridLine('no bars here'), null);
});

test('transposing: roots and basses move, sharps or flats by key, non-chords stay', () => {
  assert.equal(transposeChord('G', 2), 'A');
  assert.equal(transposeChord('C/B', 1), 'C#/C');
  assert.equal(transposeChord('F#m7', -1), 'Fm7');
  assert.equal(transposeChord('Am', 1, true), 'Bbm');
  assert.equal(transposeChord('.', 3), '.');
  assert.equal(transposeChord('G', -2), 'F');
  assert.equal(flatsFor('C', 3), true); // Eb
  assert.equal(flatsFor('G', 2), false); // A
});

test('files: several songs split at {new_song}; a song from its directives; export and import give the setlist back', async () => {
  const { setlistToChordPro, songFromChordPro, splitSongs } = await import('../../gateway/web/js/chordpro.js');
  const file = '{title: One}\n{tempo: 100}\n[C]la\n{new_song}\n{t: Two}\n{time: 6/8}\n[G]lo\n{ns}\n';
  const parts = splitSongs(file);
  assert.equal(parts.length, 2);
  assert.deepEqual(songFromChordPro(parts[0]), { title: 'One', chart: '{title: One}\n{tempo: 100}\n[C]la', tempo_bpm: 100 });
  assert.deepEqual(songFromChordPro(parts[1]), { title: 'Two', chart: '{t: Two}\n{time: 6/8}\n[G]lo', beats_per_bar: 6, beat_unit: 8 });
  assert.equal(songFromChordPro('[C]no title', 'from-file').title, 'from-file');
  const setlist = [{ title: 'Plain', tempo_bpm: 90, beats_per_bar: 3, chart: '| C | G |' }, { title: 'Bare' }];
  const exported = setlistToChordPro(setlist);
  assert.equal(exported, '{title: Plain}\n{tempo: 90}\n{time: 3/4}\n| C | G |\n{new_song}\n{title: Bare}\n');
  const back = splitSongs(exported).map((t) => songFromChordPro(t));
  assert.deepEqual(back.map((s) => [s.title, s.tempo_bpm, s.beats_per_bar, s.beat_unit]), [['Plain', 90, 3, 4], ['Bare', undefined, undefined, undefined]]);
});
