"""Outputs of the one encode (fp-encode): each takes the encoded packets from its own bounded queue, on its
own thread, so one that fails or falls behind never stalls capture, the encoder or the others."""
