"""Synthetic multi-site federations of brain-tumor cases, written as hospitals would export them.

``phantom`` draws and samples an analytic head; ``anatomy`` the MNI152 brain (``template``) with gliomas grown into
it (``tumor_growth``), warped and posed per case (``warp``); ``profiles`` says how sites differ, ``writers`` writes
NIfTI and DICOM (CT or MR + SEG), ``federation`` puts it together (``write_federation``, ``make_case``).
"""
