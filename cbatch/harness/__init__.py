"""Tools that play Torque's part without Torque: for the tests, `cbatch demo` and bench/.

None of this runs in production: momsim plays pbs_mom, pbstrack pbs_track, momjob drives it,
localnode runs a real cbatchd on a temporary socket, rootfs builds a tiny image.
"""
