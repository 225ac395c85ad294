"""buurtalert command line: run the system, import areas."""
