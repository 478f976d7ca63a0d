"""In-page checks for the layout tests (``tests/test_browser_layout.py``): JavaScript run by Playwright.

Each constant is a function expression for ``page.evaluate``; each returns plain data (lists of
descriptions) so a failing test names the elements. They measure the rendered page, not the templates:

- ``OVERFLOW``: the document scrolls sideways, and which elements stick out past the viewport without
  a scrolling ancestor (``overflow-x`` other than visible) that contains them.
- ``OVERLAP``: visible text and controls whose boxes intersect. Text is measured by its line boxes
  (a Range over each text node), not by its element's box, so a paragraph's empty right-hand side
  never "overlaps" anything; controls by their own boxes. Each box is first clipped to its clipping
  ancestors, so a scrolled-away table cell or a visually hidden label does not count. A box never
  overlaps what it contains (a link and its text). Intended overlays opt out with
  ``data-layout-overlay``; closed dialogs and off-screen elements (the skip link) are not rendered
  content. Two lines of text may touch by a sliver (tight line heights); a fifth of a line is a collision.
- ``CRAMPED``: text that touches the left or right edge of the box drawn around it (a border, a ring
  drawn with box-shadow, or a background of its own): the "current plan" outline hugging its text. A
  box that scrolls sideways is skipped (its content passes under the edge by design), and so are
  inline boxes broken over lines (their fragments have no padding at the break).
- ``FOCUS_TARGETS`` / ``FOCUS_LOG`` / ``FOCUS_RESULTS``: every visible, enabled control is tagged and its
  resting style recorded; a ``focusin`` listener then records what each Tab press focuses and whether
  its style visibly changed (an outline of 3:1 against what is behind it, or a changed ring, border,
  background or underline).
"""

from __future__ import annotations

# WCAG 2.x colour maths, shared with test_browser.py's CONTRAST: parse a computed colour, composite a
# translucent one over another, relative luminance, contrast ratio.
COLOURS = r"""
  const parse = (value) => {
    let m = value.match(/^rgba?\(([^)]+)\)$/);
    if (m) {
      const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
      return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    }
    m = value.match(/^color\(srgb ([^)]+)\)$/);
    if (m) {
      const p = m[1].split(/[\s\/]+/).filter(Boolean).map(Number);
      return [p[0] * 255, p[1] * 255, p[2] * 255, p.length > 3 ? p[3] : 1];
    }
    return null;
  };
  const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const luminance = (c) => {
    const [r, g, b] = c.slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
"""

# Shared helpers, pasted at the top of each function below.
_COMMON = (
    r"""
  const name = (el) => {
    if (el.nodeType !== 1) el = el.parentElement;
    const id = el.id ? '#' + el.id : '';
    const classes = [...el.classList].slice(0, 3).map(c => '.' + c).join('');
    const text = (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().replace(/\s+/g, ' ');
    return el.tagName.toLowerCase() + id + classes + (text ? ` “${text.slice(0, 40)}”` : '');
  };
"""
    + COLOURS
    + r"""
  // The colour behind an element: the first opaque background up the tree, translucent ones composited.
  const backdrop = (el) => {
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c && c[3] > 0) {
        layers.push(c);
        if (c[3] >= 1) break;
      }
    }
    let result = [255, 255, 255, 1];
    for (const layer of layers.reverse()) result = over(layer, result);
    return result;
  };
  const shown = (el) => el.checkVisibility({opacityProperty: true, visibilityProperty: true});
"""
)

OVERFLOW = (
    "() => {"
    + _COMMON
    + r"""
  const width = document.documentElement.clientWidth;
  const scrolls = (el) => {
    for (let n = el.parentElement; n && n !== document.body; n = n.parentElement) {
      if (getComputedStyle(n).overflowX !== 'visible') return true;
    }
    return false;
  };
  const wide = [];
  for (const el of document.body.querySelectorAll('*')) {
    if (!shown(el) || el.closest('dialog:not([open])')) continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    if ((box.right > width + 0.5 || box.left < -0.5) && !scrolls(el)) {
      wide.push(`${name(el)} spans ${Math.round(box.left)}..${Math.round(box.right)} px`);
    }
  }
  return {scrollWidth: document.documentElement.scrollWidth, width, wide: wide.slice(0, 8)};
}"""
)

OVERLAP = (
    "() => {"
    + _COMMON
    + r"""
  const CONTROL = 'a[href], button, input:not([type="hidden"]), select, textarea, summary, '
    + '[tabindex]:not([tabindex^="-"])';
  const NOT_CONTENT = 'script, style, template, noscript, dialog:not([open]), [data-layout-overlay]';
  const NO_TEXT = 'select, option, textarea, svg';
  // A box cut to what its clipping ancestors (scroll boxes, clip-path) let show; null when nothing shows.
  const clip = (rect, from) => {
    let [l, t, r, b] = [rect.left, rect.top, rect.right, rect.bottom];
    for (let n = from; n && n !== document.body; n = n.parentElement) {
      const s = getComputedStyle(n);
      const cx = s.overflowX !== 'visible' || s.clipPath !== 'none';
      const cy = s.overflowY !== 'visible' || s.clipPath !== 'none';
      if (!cx && !cy) continue;
      const c = n.getBoundingClientRect();
      if (cx) { l = Math.max(l, c.left); r = Math.min(r, c.right); }
      if (cy) { t = Math.max(t, c.top); b = Math.min(b, c.bottom); }
    }
    if (r - l < 2 || b - t < 2) return null;
    if (b + scrollY <= 0 || r + scrollX <= 0) return null; // off the page, e.g. the resting skip link
    return {l, t, r, b};
  };
  const items = [];
  const add = (node, owner, rects, kind) => {
    for (const rect of rects) {
      const box = clip(rect, kind === 'text' ? owner : owner.parentElement);
      if (box) items.push({node, owner, box, kind});
    }
  };
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest(NOT_CONTENT) || !shown(el)) continue;
    if (el.matches(CONTROL)) add(el, el, [...el.getClientRects()], 'control');
    if (el.matches('svg text')) { add(el, el, [el.getBoundingClientRect()], 'text'); continue; }
    if (el.closest(NO_TEXT)) continue;
    for (const child of el.childNodes) {
      if (child.nodeType !== 3) continue;
      const value = child.textContent;
      const start = value.length - value.trimStart().length;
      const end = value.trimEnd().length;
      if (end <= start) continue;
      const range = document.createRange();
      range.setStart(child, start);
      range.setEnd(child, end);
      add(child, el, [...range.getClientRects()], 'text');
    }
  }
  const found = new Map();
  for (let i = 0; i < items.length; i++) {
    const a = items[i];
    for (let j = i + 1; j < items.length; j++) {
      const b = items[j];
      if (a.node === b.node || a.node.contains(b.node) || b.node.contains(a.node)) continue;
      const x = Math.min(a.box.r, b.box.r) - Math.max(a.box.l, b.box.l);
      const y = Math.min(a.box.b, b.box.b) - Math.max(a.box.t, b.box.t);
      const sliver = Math.max(2, 0.2 * Math.min(a.box.b - a.box.t, b.box.b - b.box.t));
      if (x <= 2 || y <= sliver) continue;
      const key = name(a.owner) + ' overlaps ' + name(b.owner);
      const where = `(${Math.round(a.box.l)}, ${Math.round(a.box.t + scrollY)})`;
      if (!found.has(key)) found.set(key, `${key} by ${Math.round(x)} x ${Math.round(y)} px at ${where}`);
    }
  }
  return {measured: items.length, overlaps: [...found.values()].slice(0, 12)};
}"""
)

CRAMPED = (
    "() => {"
    + _COMMON
    + r"""
  const GAP = 3; // px between text and the inside of its box
  const drawn = (el) => {
    const s = getComputedStyle(el);
    const side = (w, style, color) => parseFloat(w) > 0 && style !== 'none' && (parse(color) || [0, 0, 0, 0])[3] > 0;
    const left = side(s.borderLeftWidth, s.borderLeftStyle, s.borderLeftColor);
    const right = side(s.borderRightWidth, s.borderRightStyle, s.borderRightColor);
    const ring = s.boxShadow !== 'none' && !s.boxShadow.includes('inset');
    const bg = parse(s.backgroundColor);
    const own = !!bg && bg[3] > 0 && el.parentElement
      && ratio(backdrop(el), backdrop(el.parentElement)) > 1.05;
    return {left: left || ring || own, right: right || ring || own, style: s};
  };
  const found = new Map();
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('script, style, template, noscript, svg, select, option, textarea, dialog:not([open])')) continue;
    if (!shown(el)) continue;
    for (const child of el.childNodes) {
      if (child.nodeType !== 3 || !child.textContent.trim()) continue;
      const value = child.textContent;
      const range = document.createRange();
      range.setStart(child, value.length - value.trimStart().length);
      range.setEnd(child, value.trimEnd().length);
      const lines = [...range.getClientRects()].filter(r => r.width > 1 && r.height > 1);
      if (!lines.length) continue;
      for (let box = el; box && box !== document.body; box = box.parentElement) {
        const d = drawn(box);
        if (d.style.overflowX !== 'visible' && box.scrollWidth > box.clientWidth + 1) break;
        if (!d.left && !d.right) continue;
        if (d.style.display.startsWith('inline') && box.getClientRects().length > 1) break;
        const r = box.getBoundingClientRect();
        const inner = [r.left + parseFloat(d.style.borderLeftWidth), r.right - parseFloat(d.style.borderRightWidth)];
        if (r.width < 4 || r.height < 4) break; // a hidden label, not a box
        const gaps = [];
        for (const line of lines) {
          if (d.left) gaps.push(line.left - inner[0]);
          if (d.right) gaps.push(inner[1] - line.right);
        }
        const gap = Math.min(...gaps);
        if (gap < GAP) {
          const key = `${name(el)} is ${Math.round(gap * 10) / 10} px from the edge of ${name(box)}`;
          found.set(key, key);
        }
        break; // only the nearest box around the text
      }
    }
  }
  return [...found.values()].slice(0, 12);
}"""
)

# Tags every control a keyboard user must be able to reach and stores its resting style; returns them.
FOCUS_TARGETS = (
    "() => {"
    + _COMMON
    + r"""
  const FOCUSABLE = 'a[href], button, input:not([type="hidden"]), select, textarea, summary, [tabindex], '
    + '[contenteditable="true"]';
  const style = (el) => {
    const s = getComputedStyle(el);
    return [s.outlineStyle, s.outlineWidth, s.outlineColor, s.boxShadow, s.borderColor, s.backgroundColor,
            s.textDecorationLine, s.textDecorationThickness, s.color].join('|');
  };
  window.__focusRest = new Map();
  const targets = [];
  for (const el of document.querySelectorAll(FOCUSABLE)) {
    if (el.matches(':disabled, [aria-disabled="true"], [tabindex^="-"]')) continue;
    if (el.closest('[inert], dialog:not([open])') || !shown(el)) continue;
    const box = el.getBoundingClientRect();
    if (box.width < 2 || box.height < 2) continue;
    if (box.bottom + scrollY <= 0 || box.right + scrollX <= 0) continue; // shown only when focused
    const id = String(targets.length);
    el.dataset.focusTarget = id;
    window.__focusRest.set(el, style(el));
    targets.push({id, name: name(el), radio: el.type === 'radio' ? el.name : null});
  }
  window.__focusStyle = style;
  return targets;
}"""
)

# Installs the focusin listener: each focus records the element and whether it looks focused.
FOCUS_LOG = (
    "() => {"
    + _COMMON
    + r"""
  window.__focusLog = [];
  window.__pressLog = [];  // where focus is after each Tab press: a press that moves nothing is a trap
  const serials = new WeakMap();
  let next = 0;
  document.addEventListener('keyup', (event) => {
    const el = document.activeElement;
    if (event.key === 'Tab' && el && el !== document.body) {
      if (!serials.has(el)) serials.set(el, ++next);
      window.__pressLog.push({serial: serials.get(el), name: name(el), type: el.type || ''});
    }
  });
  document.addEventListener('focusin', (event) => {
    const el = event.target;
    const s = getComputedStyle(el);
    const outline = parse(s.outlineColor);
    let indicator = null;
    let note = 'no outline, ring, border, background or underline change';
    if (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 1 && outline && outline[3] > 0) {
      const behind = backdrop(el.parentElement || el);
      const contrast = ratio(over(outline, behind), behind);
      if (contrast >= 3) indicator = 'outline';
      else note = `its outline ${s.outlineColor} is ${contrast.toFixed(2)}:1 on its background (needs 3:1)`;
    }
    const rest = window.__focusRest.get(el);
    if (!indicator && rest !== undefined) {
      const [a, b] = [rest.split('|'), window.__focusStyle(el).split('|')];
      if ([3, 4, 5, 6, 7].some(i => a[i] !== b[i])) indicator = 'restyled';
    }
    window.__focusLog.push({id: el.dataset.focusTarget ?? null, name: name(el), indicator, note});
  });
}"""
)

FOCUS_RESULTS = "() => ({focused: window.__focusLog, presses: window.__pressLog})"
