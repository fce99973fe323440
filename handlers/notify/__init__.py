"""Guardian notifications: Korean templates, channels (record, SMTP, message-gateway webhook)
and the once-per-job sending helper every notifying handler uses."""
