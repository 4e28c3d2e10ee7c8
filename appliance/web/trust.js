// A pairing link carries the access secret after '#', which never reaches a server or a log:
// put it in the form and send it, then forget it from the address bar.
(function () {
  const m = /(?:^#|&)secret=([^&]+)/.exec(location.hash);
  const form = document.querySelector('[data-testid="pair-form"]');
  if (!m || !form) return;
  history.replaceState(null, '', location.pathname);
  form.querySelector('input[name="secret"]').value = decodeURIComponent(m[1]);
  form.submit();
})();
