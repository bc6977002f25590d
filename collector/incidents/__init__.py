"""``collector incidents``: what is going wrong across the fleet, from the lines searches read.

``template`` turns a server's reply into its shape (addresses, IPs, queue IDs and numbers
replaced by placeholders); ``group`` turns assembled queue groups into problems (one logged
deferral, bounce, expiry or refusal) and problems into incidents (the fleet's view: a message
seen on several hosts counts once). Pure: no I/O.
"""
