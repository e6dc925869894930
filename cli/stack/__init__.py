"""Local processes under supervisord: `loanops stack` (`make stack`) and the demo's serving tour."""
