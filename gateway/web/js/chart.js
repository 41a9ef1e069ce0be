// Renders a parsed ChordPro chart (chordpro.js) into the chart list: one <li>
// per line, the lines that hold bars marked with data-bar (first bar,
// 0-based) and data-bars, grid cells with their own data-bar, chords over
// their syllables, transposed and with capo shapes as this device prefers.
import { flatsFor, transposeChord } from './chordpro.js';
import { el } from './util.js';

/** How chord names show: concert pitch moved by `transpose`, and with a capo the shape played beside it. */
function chordNamer(meta, transpose, capo) {
  const flats = flatsFor(meta.key, transpose);
  const shapeFlats = flatsFor(meta.key, transpose - capo);
  return (name) => {
    const concert = transposeChord(name, transpose, flats);
    const span = el('span', 'chord');
    span.append(el('b', 'concert', concert));
    if (capo > 0) span.append(el('small', 'shape', transposeChord(concert, -capo, shapeFlats)));
    return span;
  };
}

const barNum = (line) => el('span', 'bar-num', String(line.bar + 1));

export function renderChart(ol, parsed, { transpose, capo }) {
  ol.textContent = '';
  const name = chordNamer(parsed.meta, transpose, capo);
  for (const line of parsed.lines) {
    let li;
    if (line.kind === 'section') {
      li = el('li', `section ${line.type}`);
      li.append(el('span', 'section-label', line.label));
    } else if (line.kind === 'comment') {
      li = el('li', `comment ${line.style}`, line.text);
    } else if (line.kind === 'blank') {
      li = el('li', 'blank');
      li.setAttribute('aria-hidden', 'true');
    } else if (line.kind === 'tab') {
      li = el('li', 'tab', line.text);
    } else if (line.kind === 'grid') {
      li = el('li', 'line grid');
      const text = el('span', 'bar-text');
      if (line.margin) text.append(el('span', 'margin', line.margin));
      line.cells.forEach((cell, i) => {
        const c = el('span', 'cell');
        c.dataset.bar = String(line.bar + i);
        for (const tok of cell) c.append(/^[A-G]/.test(tok) ? name(tok) : el('span', 'beat-mark', tok));
        text.append(c);
      });
      if (line.note) text.append(el('span', 'note', line.note));
      li.append(barNum(line), text);
    } else {
      li = el('li', 'line');
      const text = el('span', 'bar-text');
      const hasChords = line.parts.some((p) => p.chord);
      if (!hasChords) {
        text.append(el('span', 'plain', line.parts.map((p) => p.text).join('') || '\u00a0'));
      } else {
        for (const p of line.parts) {
          const seg = el('span', 'seg');
          seg.append(p.chord ? name(p.chord) : el('span', 'chord empty', '\u00a0'));
          seg.append(el('span', 'lyric', p.text || '\u00a0'));
          text.append(seg);
        }
      }
      li.append(barNum(line), text);
    }
    if (line.bars) {
      li.dataset.bar = String(line.bar);
      li.dataset.bars = String(line.bars);
    }
    ol.append(li);
  }
}

/** The <li> holding 0-based bar `bar`, or null. */
export function lineOfBar(ol, bar) {
  if (bar == null || bar < 0) return null;
  for (const li of ol.querySelectorAll('li[data-bar]')) {
    const first = Number(li.dataset.bar);
    if (bar >= first && bar < first + Number(li.dataset.bars)) return li;
  }
  return null;
}
