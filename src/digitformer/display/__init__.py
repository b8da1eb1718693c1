"""Terminal display of digits and predictions in Unicode Braille."""
