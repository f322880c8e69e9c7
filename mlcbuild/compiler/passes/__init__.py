"""The compiler passes, one per module (named as the field names them); :mod:`mlcbuild.compiler.pipeline` lists the order."""
