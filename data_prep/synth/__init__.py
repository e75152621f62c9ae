"""Synthetic multi-site federations of brain-tumor cases, written as hospitals would export them.

``phantom`` draws and samples the anatomy, ``profiles`` says how sites differ, ``writers`` writes NIfTI and
DICOM (CT + SEG), ``federation`` puts it together (``write_federation``, ``make_case``).
"""
