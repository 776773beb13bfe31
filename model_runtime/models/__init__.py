"""Models by name: where they are kept (`stores`), what a setting names (`names`), what each file
is (`listing`), and known-good ones to download (`catalog`, `pull`). No torch here."""
