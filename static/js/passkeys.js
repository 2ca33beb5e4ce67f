// The Security page lists passkeys from the server: once django-otp-webauthn's script says a
// new one is registered, reload to show it (its name and date) in the list.
document.addEventListener("otp_webauthn.register_complete", () => {
  window.location.reload();
});
