// Keys and foot pedals (page-turners send PageDown/PageUp or arrow keys).
// They act on the transport and the chart whatever has focus, except while
// typing: Space after pressing "+" pauses, it does not press "+" again.
//
//   Space              play / pause (leader)
//   PageDown, ↓        next section of the chart, on this device only
//   PageUp, ↑          previous section, on this device only
//   →, ←               next / previous song: the leader loads it (when not
//                      playing), a follower looks at it
//   Escape, Home, L    back to the live position
//   ?                  this help
import { send } from './conn.js';
import { S, UI, isLeader, latestSeg, shownSong } from './state.js';
import { $ } from './util.js';
import { browse, flash, renderStatic } from './views.js';

const TYPING = 'textarea, [contenteditable], input:not([type=button]):not([type=checkbox]):not([type=radio]):not([type=range]):not([type=submit])';

export function wireKeys() {
  // Capture phase: before the focused element acts on the key.
  window.addEventListener('keydown', onKey, true);
  // A button activates on Space's keyup: stop that too when Space was ours.
  window.addEventListener('keyup', (e) => {
    if (e.code === 'Space' && UI.spaceTaken) {
      UI.spaceTaken = false;
      e.preventDefault();
      e.stopPropagation();
    }
  }, true);
}

function onKey(e) {
  if ($('#session').hidden || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.target instanceof Element && e.target.closest(TYPING)) return;
  // A focused list or slider keeps its arrows (keyboard users choose with them); Space stays the transport's.
  if (e.key.startsWith('Arrow') && e.target instanceof Element && e.target.closest('select, input[type=range]')) return;
  const act = action(e);
  if (!act) return;
  e.preventDefault();
  e.stopPropagation();
  if (e.code === 'Space') UI.spaceTaken = true;
  if (!e.repeat || e.key !== ' ') act();
}

function action(e) {
  switch (e.key) {
    case ' ':
      if (!isLeader() || !S.timeline) return null;
      return () => {
        if (latestSeg().playing) send({ type: 'pause' });
        else send({ type: 'play', count_in_bars: Number($('#count-in').value) });
      };
    case 'PageDown':
    case 'ArrowDown':
      return () => section(+1);
    case 'PageUp':
    case 'ArrowUp':
      return () => section(-1);
    case 'ArrowRight':
      return () => song(+1);
    case 'ArrowLeft':
      return () => song(-1);
    case 'Escape':
    case 'Home':
    case 'l':
    case 'L':
      return goLive;
    case '?':
      return () => {
        const help = $('#help');
        help.open = !help.open;
        if (help.open) help.scrollIntoView({ block: 'nearest' });
      };
    default:
      return null;
  }
}

/** Scrolls this device's chart to the next or previous section header and holds it there. */
export function section(dir) {
  const ol = $('#chart');
  const heads = [...ol.querySelectorAll('li.section')];
  if (!heads.length) return;
  let i = UI.section;
  if (i == null) {
    // From the live line: the section it is in.
    const cur = ol.querySelector('li.current, li.next');
    i = cur ? heads.filter((h) => h.compareDocumentPosition(cur) & Node.DOCUMENT_POSITION_FOLLOWING).length - 1 : -1;
  }
  i = Math.max(0, Math.min(heads.length - 1, i + dir));
  UI.section = i;
  UI.pinned = true;
  ol.scrollTo({ top: Math.max(0, heads[i].offsetTop - 4), behavior: 'smooth' });
  renderStatic();
}

/** Next or previous song: the leader loads it (not while playing), a follower looks at it. */
export function song(dir) {
  const st = S.state;
  if (!st || !st.setlist.length) return;
  const from = shownSong()?.index ?? st.song ?? -1;
  const to = Math.max(0, Math.min(st.setlist.length - 1, from + dir));
  if (isLeader()) {
    if (latestSeg().playing) return flash('Pause or stop first: changing the song stops the band.');
    if (to === st.song && S.browse == null) return;
    S.browse = null;
    send({ type: 'song', index: to });
  } else if (to !== from) {
    browse(to);
  }
}

/** Back to the live song and position: the chart follows the band again. */
export function goLive() {
  S.browse = null;
  UI.pinned = false;
  UI.section = null;
  UI.userScrolledAt = -Infinity;
  UI.currentLine = -2; // re-scroll to the current line on the next frame
  renderStatic();
}
