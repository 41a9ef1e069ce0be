// Charts the tests share.

/** A ChordPro song with metadata, sections, a comment, a grid and a chorus recall. */
export const SONG = `{title: Amazing Grace}
{artist: John Newton}
{key: G}
{tempo: 96}
{time: 3/4}
{capo: 2}

{start_of_verse: Verse 1}
[G]Amazing [G7]grace, how [C]sweet the [G]sound
That [G]saved a wretch like [D]me
{end_of_verse}

{start_of_chorus}
[C]I once was [G]lost, but [D]now am [G]found
{end_of_chorus}
{comment: Solo over the verse}
{start_of_grid label="Solo"}
| G . . | C . . | G . . | D . . |
{end_of_grid}
{chorus}
`;
