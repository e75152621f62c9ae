"""DICOM on disk: sorting an export by its headers, reading image series, SEG and RTSTRUCT, writing SEG."""
