// Small DOM and formatting helpers shared by the views.

export const $ = (sel) => document.querySelector(sel);

export const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

/** sessionStorage / localStorage as JSON, never throwing (private mode). */
export const store = {
  get(kind, key) {
    try {
      return JSON.parse(window[kind].getItem(key) || 'null');
    } catch {
      return null;
    }
  },
  set(kind, key, value) {
    try {
      if (value == null) window[kind].removeItem(key);
      else window[kind].setItem(key, JSON.stringify(value));
    } catch {
      /* private mode: membership then lasts only as long as the page */
    }
  },
};

export const fmtBpm = (bpm) => (Math.abs(bpm - Math.round(bpm)) < 0.05 ? String(Math.round(bpm)) : bpm.toFixed(1));

export const fmtCode = (code) => {
  if (code && code.length === 8) return `${code.slice(0, 4)}-${code.slice(4)}`;
  return code && code.length === 6 ? `${code.slice(0, 3)}-${code.slice(3)}` : code || '';
};
