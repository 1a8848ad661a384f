"""SBOMs: the packages an image holds, read from its package databases (`packages`), found in
its layers (`scan`) and written as SPDX 2.3 JSON (`spdx`)."""
