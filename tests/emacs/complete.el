;;; complete.el --- driven by tests/test_editor_configs.py  -*- lexical-binding: t; -*-

;; Start wisp through the shipped editor_configs/emacs/wisp.el with eglot, complete at the end
;; of a line with `completion-at-point' (which applies the item's textEdit), read `wisp/stats',
;; and write what happened to $WISP_OUT as JSON. Inputs come from the environment.

(package-initialize)  ; Debian's elpa-eglot lives in the package directories
(require 'json)
(require 'eglot)

(defvar wisp-test-report (list (cons 'statuses nil)))

(defun wisp-test-put (key value)
  (setf (alist-get key wisp-test-report) value))

(defun wisp-test-wait (what seconds condition)
  "Let eglot's process filter run until CONDITION holds, or fail after SECONDS."
  (let ((deadline (+ (float-time) seconds)))
    (while (not (funcall condition))
      (when (> (float-time) deadline)
        (error "Timed out after %ss waiting for %s" seconds what))
      (accept-process-output nil 0.05))))

(setq wisp-command (list (getenv "WISP_PYTHON") "-m" "lsp_server.cli" "serve"))
(setq wisp-settings (list :model (getenv "WISP_MODEL") :maxNewTokens 4 :multiline "never"))
(load (getenv "WISP_EL"))

(cl-defmethod eglot-handle-notification ((_server wisp-eglot-server) (_method (eql wisp/status))
                                         &key state message &allow-other-keys)
  (push (list (cons 'state state) (cons 'message message))
        (alist-get 'statuses wisp-test-report)))

(defun wisp-test-last-state ()
  (alist-get 'state (car (alist-get 'statuses wisp-test-report))))

(condition-case problem
    (progn
      (find-file (getenv "WISP_FILE"))
      (wisp-test-put 'mode (symbol-name major-mode))
      (call-interactively #'eglot)
      (wisp-test-wait "eglot to connect" 30 #'eglot-current-server)
      (wisp-test-put 'server_class (symbol-name (eieio-object-class (eglot-current-server))))
      (wisp-test-wait "wisp/status ready" 90
                      (lambda () (member (wisp-test-last-state) '("ready" "error"))))
      (goto-char (point-min))
      (end-of-line)
      (completion-at-point)
      (wisp-test-put 'line (buffer-substring-no-properties
                            (line-beginning-position) (line-end-position)))
      (wisp-test-put 'stats (jsonrpc-request (eglot-current-server) :wisp/stats nil))
      (eglot-shutdown (eglot-current-server)))
  (error (wisp-test-put 'error (format "%S" problem))))

(with-temp-file (getenv "WISP_OUT")
  (insert (json-encode wisp-test-report)))
(kill-emacs 0)
;;; complete.el ends here
