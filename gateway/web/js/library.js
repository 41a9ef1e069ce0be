// The leader's library, kept in this browser across sessions (a session's
// setlist is gone when the session expires): saved setlists, and ChordPro
// import and export of setlists.
import { send } from './conn.js';
import { setlistToChordPro, songFromChordPro, splitSongs } from './chordpro.js';
import { S } from './state.js';
import { $, el, store } from './util.js';
import { showError } from './views.js';

const KEY = 'bandsync.library';
const MAX_SONGS = 50; // a setlist's limit (docs/protocol.md)

const load = () => store.get('localStorage', KEY) || { setlists: [] };

export function renderLibrary() {
  const lib = load();
  const ul = $('#library-list');
  ul.textContent = '';
  $('#library-empty').hidden = lib.setlists.length > 0;
  lib.setlists.forEach((list, i) => {
    const li = el('li', 'library-item');
    li.append(el('span', 'name', list.name), el('small', 'count', `${list.songs.length} songs`));
    const use = el('button', 'btn small', 'Use');
    use.type = 'button';
    use.title = `Make “${list.name}” the band's setlist`;
    use.addEventListener('click', () => send({ type: 'setlist', songs: list.songs }));
    const del = el('button', 'btn small ghost danger', 'Delete');
    del.type = 'button';
    del.addEventListener('click', () => {
      const next = load();
      next.setlists.splice(i, 1);
      store.set('localStorage', KEY, next);
      renderLibrary();
    });
    li.append(use, del);
    ul.append(li);
  });
}

export function wireLibrary() {
  $('#library-save').addEventListener('click', () => {
    const name = $('#library-name').value.trim();
    if (!name) return showError('invalid', 'Name the setlist first.');
    if (!S.state || !S.state.setlist.length) return showError('invalid', 'The setlist is empty.');
    const lib = load();
    lib.setlists = lib.setlists.filter((l) => l.name !== name);
    lib.setlists.push({ name, songs: S.state.setlist });
    store.set('localStorage', KEY, lib);
    $('#library-name').value = '';
    renderLibrary();
  });
  $('#library-import').addEventListener('change', async (e) => {
    const songs = [];
    for (const file of e.target.files) {
      const text = await file.text();
      const fallback = file.name.replace(/\.[^.]*$/, '');
      for (const part of splitSongs(text)) songs.push(songFromChordPro(part, fallback));
    }
    e.target.value = '';
    if (!songs.length) return;
    const all = [...(S.state ? S.state.setlist : []), ...songs];
    if (all.length > MAX_SONGS) return showError('invalid', `A setlist holds at most ${MAX_SONGS} songs.`);
    send({ type: 'setlist', songs: all });
  });
  $('#library-export').addEventListener('click', () => {
    if (!S.state || !S.state.setlist.length) return showError('invalid', 'The setlist is empty.');
    const blob = new Blob([setlistToChordPro(S.state.setlist)], { type: 'text/plain' });
    const a = el('a');
    a.href = URL.createObjectURL(blob);
    a.download = 'setlist.cho';
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  });
  renderLibrary();
}
