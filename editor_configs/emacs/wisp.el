;;; wisp.el --- wisp (local AI code completion) through eglot  -*- lexical-binding: t; -*-

;; Set `wisp-command' first if wisp is not on PATH, then load this file from your init file:
;;   (load "/path/to/wisp/editor_configs/emacs/wisp.el")
;; and run M-x eglot in a buffer of one of `wisp-modes' (or add `eglot-ensure' to their hooks).
;; Suggestions arrive through completion-at-point (the *Completions* buffer, company or corfu).

;;; Code:

(require 'cl-lib)
(require 'eglot)

(defvar wisp-command '("wisp" "serve")
  "How to start the wisp language server; read when this file is loaded.")

(defvar wisp-settings '(:maxNewTokens 48 :multiline "never" :commentsAndStrings "never")
  "wisp's settings as camelCase keywords, sent as initializationOptions when wisp starts.")

(defvar wisp-modes '(python-mode python-ts-mode)
  "Major modes whose buffers use wisp.
eglot runs one server per buffer, so wisp takes the place of the usual one there.")

(defclass wisp-eglot-server (eglot-lsp-server) ()
  :documentation "The wisp language server.")

(cl-defmethod eglot-initialization-options ((_server wisp-eglot-server))
  "Send `wisp-settings' when the server starts."
  wisp-settings)

(add-to-list 'eglot-server-programs `(,wisp-modes . (wisp-eglot-server . ,wisp-command)))

(provide 'wisp)
;;; wisp.el ends here
