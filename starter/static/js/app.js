/* Flask Credits Starter: progressive enhancement only. Every page works without this file.
 *
 *   [data-dialog-open="ID"]   button or link that opens <dialog id="ID"> as a modal (a link still
 *                             navigates to its href when JavaScript or <dialog> is unavailable)
 *   [data-dialog-close]       closes the dialog it sits in (or the dialog whose id it names)
 *   form[data-confirm="…"]    asks for confirmation before submitting (also on a submit button)
 *   [data-copy="ID"]          copies the text of #ID to the clipboard
 *   [data-auto-refresh="N"]   reloads the page after N seconds (e.g. while a payment is processing)
 *   select[data-autosubmit]   submits its form when a new option is picked with the pointer
 *   <time datetime data-style> shown in the viewer's time zone: the browser's zone goes into the
 *                             `tz` cookie the server renders with; until then this relabels them
 */
(function () {
  'use strict';

  document.documentElement.classList.add('js');

  var FOCUSABLE = [
    'a[href]', 'button:not([disabled])', 'input:not([disabled]):not([type="hidden"])',
    'select:not([disabled])', 'textarea:not([disabled])', '[tabindex]:not([tabindex="-1"])'
  ].join(',');

  var liveRegion = null;

  function announce(message) {
    if (!liveRegion) {
      liveRegion = document.createElement('div');
      liveRegion.className = 'visually-hidden';
      liveRegion.setAttribute('role', 'status');
      liveRegion.setAttribute('aria-live', 'polite');
      document.body.appendChild(liveRegion);
    }
    liveRegion.textContent = '';
    window.setTimeout(function () { liveRegion.textContent = message; }, 50);
  }

  // Dialogs ------------------------------------------------------------------------------------

  var openers = new WeakMap();

  function openDialog(dialog, opener) {
    if (typeof dialog.showModal !== 'function') return false;
    if (!dialog.open) {
      openers.set(dialog, opener);
      dialog.showModal();
    }
    var target = dialog.querySelector('[autofocus]') || dialog.querySelector(FOCUSABLE);
    if (target) target.focus();
    return true;
  }

  // `close` does not bubble, so listen in the capture phase for every dialog on the page.
  document.addEventListener('close', function (event) {
    var dialog = event.target;
    if (!(dialog instanceof HTMLElement) || dialog.tagName !== 'DIALOG') return;
    var opener = openers.get(dialog);
    openers.delete(dialog);
    if (opener && document.contains(opener)) opener.focus();
  }, true);

  // A click that starts and ends on the backdrop closes; a text selection dragged outside does not.
  var pressedOnBackdrop = null;

  function isOnBackdrop(dialog, event) {
    if (event.target !== dialog) return false;
    var r = dialog.getBoundingClientRect();
    return event.clientX < r.left || event.clientX > r.right || event.clientY < r.top || event.clientY > r.bottom;
  }

  document.addEventListener('pointerdown', function (event) {
    var t = event.target;
    pressedOnBackdrop = t && t.tagName === 'DIALOG' && t.open && isOnBackdrop(t, event) ? t : null;
  });

  document.addEventListener('click', function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;

    var opener = target.closest('[data-dialog-open]');
    if (opener) {
      // Let modified clicks (new tab, new window) through to the link's href.
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      var dialog = document.getElementById(opener.getAttribute('data-dialog-open'));
      if (dialog && dialog.tagName === 'DIALOG' && openDialog(dialog, opener)) event.preventDefault();
      return;
    }

    var closer = target.closest('[data-dialog-close]');
    if (closer) {
      var name = closer.getAttribute('data-dialog-close');
      var owner = name ? document.getElementById(name) : closer.closest('dialog');
      if (owner && owner.open) {
        event.preventDefault();
        owner.close();
      }
      return;
    }

    if (target.tagName === 'DIALOG' && target.open && pressedOnBackdrop === target && isOnBackdrop(target, event)) {
      target.close();
    }
    pressedOnBackdrop = null;
  });

  // Confirmation before destructive submits ------------------------------------------------------

  document.addEventListener('submit', function (event) {
    var form = event.target;
    var submitter = event.submitter;
    var message = (submitter && submitter.getAttribute('data-confirm')) || form.getAttribute('data-confirm');
    if (message === null) return;
    if (!window.confirm(message || 'Are you sure?')) event.preventDefault();
  });

  // Copy to clipboard ----------------------------------------------------------------------------

  function fallbackCopy(text) {
    var area = document.createElement('textarea');
    area.value = text;
    area.setAttribute('readonly', '');
    area.style.position = 'fixed';
    area.style.opacity = '0';
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error('copy failed'));
  }

  document.addEventListener('click', function (event) {
    var button = event.target instanceof Element ? event.target.closest('[data-copy]') : null;
    if (!button) return;
    var source = document.getElementById(button.getAttribute('data-copy'));
    if (!source) return;
    event.preventDefault();
    var text = 'value' in source && typeof source.value === 'string' ? source.value : source.textContent.trim();
    var copy = navigator.clipboard && window.isSecureContext
      ? navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); })
      : fallbackCopy(text);
    var label = button.getAttribute('data-copy-label') || button.textContent;
    button.setAttribute('data-copy-label', label);
    copy.then(function () {
      button.textContent = 'Copied';
      announce('Copied to clipboard');
    }, function () {
      button.textContent = 'Press Ctrl+C';
      announce('Could not copy automatically; select the text and copy it.');
    }).then(function () {
      window.setTimeout(function () { button.textContent = label; }, 2000);
    });
  });

  // Auto-submitting selects (the team switcher) --------------------------------------------------
  // A keyboard user moving through options must not be navigated away on every arrow key, so a
  // keyboard change only reveals the submit button (.is-dirty); a pointer choice submits at once.

  var keyboardChange = false;
  document.addEventListener('keydown', function (event) {
    if (event.target instanceof Element && event.target.matches('select[data-autosubmit]')) keyboardChange = true;
  });
  document.addEventListener('pointerdown', function () { keyboardChange = false; });

  document.addEventListener('change', function (event) {
    var select = event.target;
    if (!(select instanceof HTMLSelectElement) || !select.hasAttribute('data-autosubmit') || !select.form) return;
    if (keyboardChange) {
      select.form.classList.add('is-dirty');
      return;
    }
    if (typeof select.form.requestSubmit === 'function') select.form.requestSubmit();
    else select.form.submit();
  });

  // Auto refresh ---------------------------------------------------------------------------------

  var refresher = document.querySelector('[data-auto-refresh]');
  if (refresher) {
    var seconds = parseInt(refresher.getAttribute('data-auto-refresh'), 10);
    if (seconds > 0) {
      var reloadWhenIdle = function () {
        // Do not pull the page from under someone who is typing or has a dialog open.
        var busy = document.querySelector('dialog[open]') ||
          (document.activeElement && document.activeElement.matches('input, textarea, select'));
        if (busy) window.setTimeout(reloadWhenIdle, seconds * 1000);
        else window.location.reload();
      };
      window.setTimeout(reloadWhenIdle, seconds * 1000);
    }
  }

  // The viewer's time zone -------------------------------------------------------------------------

  // Times are rendered by the server in the zone of the `tz` cookie (or the one picked on /time-zone).
  // Here the browser's zone goes into that cookie, and a page rendered in another zone (the very first
  // one, before the cookie existed) is relabelled from each <time datetime>, which is UTC.
  var root = document.documentElement;
  var browserZone = window.Intl && Intl.DateTimeFormat ? Intl.DateTimeFormat().resolvedOptions().timeZone : '';
  if (browserZone && /^[A-Za-z0-9_+\-\/]{1,64}$/.test(browserZone) && root.getAttribute('data-tz-source') !== 'setting') {
    var cookie = document.cookie.split('; ').filter(function (c) { return c.indexOf('tz=') === 0; })[0];
    if (cookie !== 'tz=' + browserZone) {
      document.cookie = 'tz=' + browserZone + '; path=/; max-age=31536000; samesite=lax' +
        (window.location.protocol === 'https:' ? '; secure' : '');
    }
    if (root.getAttribute('data-tz') !== browserZone) relabelTimes(browserZone);
  }

  function relabelTimes(zone) {
    var parts = function (date, options) {
      var found = {};
      new Intl.DateTimeFormat('en-GB', Object.assign({ timeZone: zone }, options)).formatToParts(date)
        .forEach(function (part) { found[part.type] = part.value; });
      return found;
    };
    document.querySelectorAll('time[datetime][data-style]').forEach(function (element) {
      var date = new Date(element.getAttribute('datetime'));
      if (isNaN(date.getTime())) return;
      var p = parts(date, {
        day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit',
        hourCycle: 'h23', timeZoneName: 'short'
      });
      var day = p.day + ' ' + p.month;
      var clock = p.hour + ':' + p.minute;
      var style = element.getAttribute('data-style');
      element.textContent = style === 'date' ? day + ' ' + p.year
        : style === 'cell' ? day + ' ' + p.year + ' ' + clock
        : style === 'short' ? day + ' ' + clock
        : day + ' ' + p.year + ', ' + clock + ' ' + p.timeZoneName;
    });
    document.querySelectorAll('[data-tz-label]').forEach(function (label) { label.textContent = zone; });
    root.setAttribute('data-tz', zone);
  }

  // The usage page counts days in the viewer's time zone: the first visit reloads it once with the
  // browser's zone; later visits keep the one remembered (or chosen in the form).
  var zoneForm = document.querySelector('form[data-fill-timezone]');
  if (zoneForm && window.Intl && Intl.DateTimeFormat) {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    var zoneInput = zoneForm.querySelector('[data-timezone]');
    if (zone && zoneInput && zoneInput.value !== zone) {
      var url = new URL(window.location.href);
      url.searchParams.set('tz', zone);
      window.location.replace(url.toString());
    }
  }
})();
